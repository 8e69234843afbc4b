"""Endpoints created through the control API, kept in ``<state_dir>/endpoints.toml``.

The master owns the store: it loads it at start and on every reload, and the
``endpoints.add/update/remove`` requests change it. `merge_endpoints` validates
the stored endpoints with the config loader's own `parse_endpoint` and
`check_endpoints` (so an API endpoint gets exactly the messages a config-file
endpoint would) and appends them to the file's endpoints. Endpoints of the
config file are read-only here: the API can neither change nor shadow them.

Entries are stored as they were sent (the ``[[endpoints]]`` table shape), so a
field a newer loader understands is never lost by a round trip through an older
normaliser. Saving is atomic: a temporary file in the same directory, fsync,
rename, fsync of the directory; a crash leaves either the old or the new file.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from tlsgate.config.endpoints import check_endpoints, parse_endpoint
from tlsgate.config.model import Config, EndpointConfig
from tlsgate.errors import ConfigError, Problem, Problems

STORE_NAME = "endpoints.toml"
API_SOURCE = "<api>"
"""The source named in problems with an endpoint sent in a request."""
_HEADER = (
    "# Endpoints created through tlsgate's control API (`tlsgate endpoints add/update/remove`).\n"
    "# Written by the gateway; edits by hand take effect at the next reload.\n\n"
)


class EndpointStore:
    """An immutable list of API endpoint tables; the ``with_*`` methods return new stores."""

    def __init__(self, path: Path, entries: list[dict[str, Any]] | None = None):
        self.path = path
        self.entries: tuple[dict[str, Any], ...] = tuple(entries or ())

    @classmethod
    def load(cls, state_dir: Path) -> EndpointStore:
        """The store in ``state_dir``; empty when the file does not exist. `ConfigError` if unreadable."""
        path = state_dir / STORE_NAME
        source = str(path)
        try:
            data = tomllib.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return cls(path)
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(
                [Problem(source, "<file>", f"cannot read the endpoint store: {e}")]
            ) from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError([Problem(source, "<toml>", str(e))]) from e
        unknown = sorted(set(data) - {"endpoints"})
        if unknown:
            raise ConfigError(
                [Problem(source, unknown[0], "unknown key; the store holds only [[endpoints]]")]
            )
        entries = data.get("endpoints", [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ConfigError(
                [Problem(source, "endpoints", "expected an array of tables ([[endpoints]])")]
            )
        return cls(path, entries)

    @property
    def source(self) -> str:
        return str(self.path)

    def names(self) -> list[str]:
        return [str(entry.get("name")) for entry in self.entries]

    def get(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.entries if e.get("name") == name), None)

    def with_added(self, entry: dict[str, Any]) -> EndpointStore:
        return EndpointStore(self.path, [*self.entries, entry])

    def with_replaced(self, name: str, entry: dict[str, Any]) -> EndpointStore:
        return EndpointStore(
            self.path, [entry if e.get("name") == name else e for e in self.entries]
        )

    def without(self, name: str) -> EndpointStore:
        return EndpointStore(self.path, [e for e in self.entries if e.get("name") != name])

    def save(self) -> None:
        """Write the store atomically (mode 0600); `OSError` or `ValueError` (not storable as TOML)."""
        text = _HEADER + tomli_w.dumps({"endpoints": list(self.entries)})
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = directory / f".{STORE_NAME}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def merge_endpoints(file_config: Config, store: EndpointStore) -> tuple[Config, list[Problem]]:
    """``file_config`` with the store's endpoints appended, and the warnings.

    `ConfigError` with every problem (named ``STORE_FILE: endpoints[i].key``) if a
    stored endpoint is invalid, reuses the name of a config-file endpoint, or
    breaks a rule across endpoints (unique names, pooling).
    """
    problems = Problems()
    source = store.source
    listen_ports = file_config.gateway.listen_ports
    file_names = {e.name: i for i, e in enumerate(file_config.endpoints)}
    api: list[tuple[str, EndpointConfig]] = []
    for index, entry in enumerate(store.entries):
        path = f"endpoints[{index}]"
        endpoint = parse_endpoint(
            entry, source, path, problems, listen_ports, base_dir=store.path.parent
        )
        if endpoint is None:
            continue
        if endpoint.name in file_names:
            problems.error(source, f"{path}.name", read_only_message(endpoint.name, file_config))
            continue
        api.append((path, endpoint))
    check_cross_endpoint_rules(file_config, api, source, problems)
    problems.raise_if_errors()
    merged = dataclasses.replace(
        file_config, endpoints=file_config.endpoints + tuple(e for _, e in api)
    )
    return merged, problems.warnings


def check_cross_endpoint_rules(
    file_config: Config,
    api: list[tuple[str, EndpointConfig]],
    source: str,
    problems: Problems,
) -> None:
    """`check_endpoints` over file + API endpoints, keeping only the problems of API endpoints."""
    marker = "\0file:"
    pairs = [
        (f"{marker}{file_config.source} endpoints[{i}]", e)
        for i, e in enumerate(file_config.endpoints)
    ]
    scratch = Problems()
    check_endpoints(pairs + api, source, scratch)
    for problem in scratch.items:
        if problem.key_path.startswith(marker):
            continue
        message = problem.message.replace(marker, "")
        problems.items.append(dataclasses.replace(problem, message=message))


def read_only_message(name: str, file_config: Config) -> str:
    return (
        f"endpoint '{name}' is defined in the config file {file_config.source} "
        "and is read-only through the API; edit that file and reload instead"
    )


def merge_update(existing: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``existing`` with ``changes`` applied; nested tables (``upstream``) are merged key by key."""
    merged = copy.deepcopy(existing)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_update(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def problems_to_json(problems: list[Problem]) -> list[dict[str, Any]]:
    return [
        {
            "source": p.source,
            "key_path": p.key_path,
            "message": p.message,
            "warning": p.warning,
            "text": str(p),
        }
        for p in problems
    ]
