"""Path-aware, typed reading of one TOML table, collecting every problem instead of raising.

`Table` is what the section parsers in `load.py` and `endpoints.py` use: each
``get``/``require``/``array`` call names a key, converts its value with a parser
from `fields.py`, and on failure records ``FILE: key.path: message`` in the shared
`Problems` and returns a fallback, so that parsing goes on and one run reports
everything. ``finish()`` then reports the keys nobody asked for, with a
did-you-mean suggestion.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tlsgate.config.fields import FieldError, describe, expect_str
from tlsgate.errors import Problems

T = TypeVar("T")

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass
class Context:
    """What every section parser of one config source shares."""

    source: str
    """Shown first in every problem: the file path, ``<default>``, ``<cli>``, ``<api>``."""
    problems: Problems = field(default_factory=Problems)
    base_dir: Path = field(default_factory=Path.cwd)
    """Relative paths in the source are relative to this directory."""

    def to_path(self, value: object) -> Path:
        """A path value: ``~`` expanded, made absolute against `base_dir`, normalised."""
        text = expect_str(value)
        if not text.strip():
            raise FieldError("expected a path, got an empty string")
        if "\0" in text:
            raise FieldError("a path cannot contain a NUL character")
        expanded = expand_user(text)
        if expanded is None:
            head = json.dumps(text.split("/", 1)[0])
            raise FieldError(f"cannot expand {head}: no such user, or no home directory")
        return Path(os.path.normpath(self.base_dir / expanded))


def expand_user(text: str) -> Path | None:
    """``Path(text).expanduser()``, or None where that raises: ``~name`` for a user that
    does not exist, or ``~`` with neither HOME nor a password entry."""
    try:
        return Path(text).expanduser()
    except RuntimeError:
        return None


def join_key(path: str, key: str) -> str:
    """``join_key("gateway", "listen") == "gateway.listen"``; odd keys are quoted as in TOML."""
    shown = key if _BARE_KEY.fullmatch(key) else json.dumps(key)
    return f"{path}.{shown}" if path else shown


class Table:
    """One TOML table (a dict from tomllib) at ``path`` inside the source."""

    def __init__(self, data: Mapping[str, object], path: str, ctx: Context):
        self.data = data
        self.path = path
        self.ctx = ctx
        self._known: list[str] = []

    def key_path(self, key: str) -> str:
        return join_key(self.path, key)

    def error(self, key: str, message: str) -> None:
        self.ctx.problems.error(self.ctx.source, self.key_path(key), message)

    def warn(self, key: str, message: str) -> None:
        self.ctx.problems.warn(self.ctx.source, self.key_path(key), message)

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, convert: Callable[[object], T], default: T) -> T:
        """The converted value, or ``default`` if the key is absent or its value is bad."""
        self._known.append(key)
        if key not in self.data:
            return default
        try:
            return convert(self.data[key])
        except FieldError as e:
            self.error(key, str(e))
            return default

    def require(self, key: str, convert: Callable[[object], T]) -> T | None:
        """Like `get`, but an absent key is a problem; ``None`` means a problem was recorded."""
        self._known.append(key)
        if key not in self.data:
            self.error(key, "missing required key")
            return None
        try:
            return convert(self.data[key])
        except FieldError as e:
            self.error(key, str(e))
            return None

    def array(self, key: str, convert: Callable[[object], T], default: list[T]) -> list[T]:
        """An array whose items are converted one by one; bad items are reported as ``key[i]``."""
        self._known.append(key)
        if key not in self.data:
            return default
        items = self.data[key]
        if not isinstance(items, list):
            self.error(key, f"expected an array, got {describe(items)}")
            return default
        converted = []
        for index, item in enumerate(items):
            try:
                converted.append(convert(item))
            except FieldError as e:
                self.ctx.problems.error(self.ctx.source, f"{self.key_path(key)}[{index}]", str(e))
        return converted

    def table(self, key: str, *, required: bool = False, hint: str = "") -> Table | None:
        """The sub-table at ``key``; ``None`` if absent (a problem when required) or not a table."""
        self._known.append(key)
        if key not in self.data:
            if required:
                self.error(key, "missing required table")
            return None
        value = self.data[key]
        if not isinstance(value, dict):
            self.error(key, f"expected a table, got {describe(value)}{hint}")
            return None
        return Table(value, self.key_path(key), self.ctx)

    def section(self, key: str) -> Table:
        """A top-level section: an empty table when absent, so its defaults apply."""
        return self.table(key) or Table({}, self.key_path(key), self.ctx)

    def raw(self, key: str) -> object:
        """The unconverted value (``None`` if absent), for parsers that walk it themselves."""
        self._known.append(key)
        return self.data.get(key)

    def finish(self, hints: Mapping[str, str] | None = None) -> None:
        """Report every key that no parser asked for, suggesting the closest known key."""
        for key in self.data:
            if key in self._known:
                continue
            if hints and key in hints:
                self.error(key, hints[key])
                continue
            close = difflib.get_close_matches(key, self._known, n=1)
            if close:
                self.error(key, f"unknown key; did you mean '{close[0]}'?")
            else:
                known = ", ".join(dict.fromkeys(self._known))
                self.error(key, f"unknown key (known keys here: {known})")
