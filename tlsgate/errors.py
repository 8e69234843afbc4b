"""Error types shared by every layer, and the config-problem collector.

Config problems are collected, not raised one by one, so that `tlsgate check`
and `tlsgate start` can list every problem of a file at once, each as
``FILE: key.path: what is wrong`` (warnings as ``FILE: key.path: warning: ...``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


class TlsgateError(Exception):
    """Base class of tlsgate's own errors."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong (or suspicious, when ``warning``) in a config source."""

    source: str
    """The file the bad text is in (or ``<default>``, ``<cli>``, ``<api>``)."""
    key_path: str
    """Dotted path to the key, with list indexes: ``endpoints[0].upstream.url``."""
    message: str
    warning: bool = False

    def __str__(self) -> str:
        prefix = "warning: " if self.warning else ""
        return f"{self.source}: {self.key_path}: {prefix}{self.message}"


@dataclass
class Problems:
    """Collects problems while a config is parsed; raise at the end if any is an error."""

    items: list[Problem] = field(default_factory=list)

    def error(self, source: str, key_path: str, message: str) -> None:
        self.items.append(Problem(source, key_path, message))

    def warn(self, source: str, key_path: str, message: str) -> None:
        self.items.append(Problem(source, key_path, message, warning=True))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.items if not p.warning]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.items if p.warning]

    def raise_if_errors(self) -> None:
        if self.errors:
            raise ConfigError(self.items)


class ConfigError(TlsgateError):
    """A config (file, API request or CLI flags) has one or more errors."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class ProtocolError(TlsgateError, ValueError):
    """A peer sent bytes that break a wire protocol (control socket, PROXY header)."""
