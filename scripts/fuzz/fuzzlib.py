"""Start-up shared by the atheris harnesses ``fuzz_<target>.py``: instrumentation and arguments.

`run` instruments every ``tlsgate`` module (and only those: coverage of the
standard library, PyYAML or cryptography would only slow the search), loads the
target's check from `fuzzchecks`, and hands libFuzzer its arguments. Without a
corpus argument a harness fuzzes with a working corpus under ``$TLSGATE_FUZZ_DIR``
(default ``/tmp/tlsgate-fuzz/<target>/corpus``, where libFuzzer adds what it
finds) plus the committed seeds in ``tests/data/fuzz/seeds/<target>/`` (read
only); crash, timeout and leak files go to ``.../<target>/artifacts/``. Given
files instead of directories, libFuzzer just runs them once: that is how a crash
is replayed. Findings listed in `fuzzchecks.known` (reported, not fixed yet) are
ignored so that a run can find the next one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SEEDS = REPO / "tests" / "data" / "fuzz" / "seeds"


def work_dir(target: str) -> Path:
    return Path(os.environ.get("TLSGATE_FUZZ_DIR", "/tmp/tlsgate-fuzz")) / target


def libfuzzer_args(target: str, argv: list[str]) -> list[str]:
    """``argv`` completed with the default corpora, dictionary and artifact prefix."""
    args = list(argv)
    flags = [a for a in args[1:] if a.startswith("-")]
    if not any(not a.startswith("-") for a in args[1:]):
        corpus = work_dir(target) / "corpus"
        corpus.mkdir(parents=True, exist_ok=True)
        args += [str(corpus), str(SEEDS / target)]
    dictionary = HERE / f"{target}.dict"
    if dictionary.exists() and not any(f.startswith("-dict=") for f in flags):
        args.append(f"-dict={dictionary}")
    if not any(f.startswith("-artifact_prefix=") for f in flags):
        artifacts = work_dir(target) / "artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        args.append(f"-artifact_prefix={artifacts}/")
    return args


def run(target: str) -> None:
    """Fuzz ``target`` with the process's command line as libFuzzer arguments; never returns."""
    import atheris

    for path in (str(REPO), str(HERE)):
        if path not in sys.path:
            sys.path.insert(0, path)
    with atheris.instrument_imports(include=["tlsgate"]):
        from fuzzchecks import load_check

        check = load_check(target)
    from fuzzchecks.known import is_known

    def test_one_input(data: bytes) -> None:
        try:
            check(data)
        except Exception as error:
            if is_known(error) is None:
                raise

    atheris.Setup(libfuzzer_args(target, sys.argv), test_one_input)
    atheris.Fuzz()
