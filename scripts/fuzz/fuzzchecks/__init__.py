"""The fuzz targets' checks, importable without atheris.

Each module here has one ``check(data: bytes) -> None`` that runs the code under
test on one input and raises on a finding: any exception other than the one the
code is documented to raise, or a broken invariant (AssertionError). The atheris
harnesses in ``scripts/fuzz/fuzz_*.py`` call it from ``TestOneInput``, and
``tests/unit/test_fuzz_regressions.py`` replays the seed corpora and every stored
crash through the same function in CI, where atheris is not installed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

TARGETS = ("clienthello", "proxy_header", "config", "policy")
"""Target names; each is a module of this package, a ``fuzz_<name>.py`` harness and a
``tests/data/fuzz/{seeds,regressions}/<name>/`` directory."""


def load_check(target: str) -> Callable[[bytes], None]:
    """The ``check`` function of a target, by name."""
    if target not in TARGETS:
        raise ValueError(f"unknown fuzz target {target!r}; known: {', '.join(TARGETS)}")
    return importlib.import_module(f"{__name__}.{target}").check
