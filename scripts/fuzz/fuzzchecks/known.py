"""Findings reported but not yet fixed, so that a fuzzing run can go past them.

libFuzzer stops at the first crash, and a bug in code outside the fuzzing owner's
files (fixed later by that code's owner) would otherwise be all a run ever finds.
The harnesses ignore an exception that matches an entry here; the regression
tests replay each entry's stored input as a strict xfail, so the entry has to be
removed here once the bug is fixed. Matching is by exception type and the
innermost tlsgate function in the traceback.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass


@dataclass(frozen=True)
class KnownFinding:
    regression: str
    """The stored input: ``tests/data/fuzz/regressions/<regression>``."""
    exception: type[BaseException]
    function: str
    """``module:function`` of the innermost frame inside the ``tlsgate`` package."""
    summary: str


OPEN: tuple[KnownFinding, ...] = ()


def innermost_tlsgate_frame(error: BaseException) -> str | None:
    """``module:function`` of the deepest traceback frame in tlsgate's own files."""
    found = None
    for frame in traceback.extract_tb(error.__traceback__):
        path = frame.filename.replace("\\", "/")
        if "/tlsgate/" in path and "/scripts/" not in path:
            module = path.rsplit("/tlsgate/", 1)[1].removesuffix(".py").replace("/", ".")
            found = f"tlsgate.{module}:{frame.name}"
    return found


def is_known(error: BaseException) -> KnownFinding | None:
    where = innermost_tlsgate_frame(error)
    for finding in OPEN:
        if isinstance(error, finding.exception) and where == finding.function:
            return finding
    return None
