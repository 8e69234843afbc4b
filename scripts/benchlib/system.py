"""What the benchmark needs on the machine, and what the machine is.

`ensure_packages` installs the Debian packages (haproxy, nginx with its stream
module, sniproxy, wrk) with one ``apt-get update`` and one ``apt-get install``
when a tool is missing. `ensure_python` makes sure the running interpreter can
import tlsgate's dependencies with the checkout first on the path, and matplotlib
for the chart; if it cannot, it builds ``.venv`` in the checkout with
``pip install -e '.[bench]'`` and re-executes the bench there. `describe_machine`
and `versions` are what the report records.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TLSGATE = REPO
"""The tlsgate tree that is benchmarked: this checkout unless ``--tlsgate DIR`` or ``--rev`` says otherwise."""
TLSGATE_LABEL = ""
"""How the report names that tree when it is not this checkout's working tree."""
NGINX_STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
TOOLS = {
    "haproxy": "haproxy",
    "nginx": "nginx",
    "sniproxy": "sniproxy",
    "wrk": "wrk",
    "openssl": "openssl",
}
PACKAGES = ["haproxy", "nginx", "libnginx-mod-stream", "sniproxy", "wrk", "openssl"]


class SetupError(Exception):
    pass


def missing_tools() -> list[str]:
    missing = [
        tool
        for tool in TOOLS
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists()
    ]
    if not NGINX_STREAM_MODULE.exists():
        missing.append("nginx stream module")
    return missing


def tool_path(tool: str) -> str:
    return shutil.which(tool) or str(Path("/usr/sbin", tool))


def ensure_packages() -> None:
    missing = missing_tools()
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SetupError(
            f"missing {', '.join(missing)}; install: apt-get install {' '.join(PACKAGES)}"
        )
    print(f"bench: installing {' '.join(PACKAGES)} (missing: {', '.join(missing)})", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise SetupError(f"{' '.join(argv)} failed:\n{result.stderr[-2000:]}")
    still = missing_tools()
    if still:
        raise SetupError(f"still missing after apt-get install: {', '.join(still)}")


def _imports_ok(python: str, modules: str) -> bool:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    probe = f"import {modules}"
    return (
        subprocess.run([python, "-c", probe], env=env, capture_output=True, timeout=120).returncode
        == 0
    )


def ensure_python(argv: list[str], chart: bool = False) -> None:
    """Return if this interpreter can run tlsgate from the checkout; else build .venv and re-exec.

    ``chart``: this run draws docs/benchmarks.png, so a venv without matplotlib gets it
    (a run that writes no docs leaves the venv as it is)."""
    if _imports_ok(sys.executable, "tlsgate.cli, gevent, OpenSSL, cel"):
        in_venv = sys.prefix != sys.base_prefix
        if chart and in_venv and not _imports_ok(sys.executable, "matplotlib"):
            print("bench: installing matplotlib into this venv for the chart", flush=True)
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "-q", "matplotlib"],
                check=False,
                timeout=600,
            )
        return
    venv = REPO / ".venv"
    python = venv / "bin" / "python"
    if os.environ.get("TLSGATE_BENCH_REEXEC"):
        raise SetupError(f"{python} still cannot import tlsgate's dependencies")
    print(f"bench: installing tlsgate from the checkout into {venv}", flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-e", f"{REPO}[bench]"], check=True, timeout=900
    )
    os.environ["TLSGATE_BENCH_REEXEC"] = "1"
    os.execv(str(python), [str(python), *argv])


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def describe_machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kb / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cores": str(os.cpu_count()),
        "cpu": model,
        "memory": memory,
        "kernel": platform.release(),
        "os": _os_name(),
    }


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


def _first_line(argv: list[str], pattern: str = r"\d+\.\d+(\.\d+)?") -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = result.stdout + result.stderr
    match = re.search(pattern, text)
    return match.group(0) if match else text.strip().splitlines()[0] if text.strip() else "?"


def versions() -> dict[str, str]:
    import gevent
    import OpenSSL

    import tlsgate

    found = {
        "tlsgate": f"{tlsgate.__version__} ({_git_head()})",
        "python": f"{platform.python_version()} ({_python_build()})",
        "gevent": gevent.__version__,
        "pyOpenSSL": OpenSSL.__version__,
        "OpenSSL (Python)": OpenSSL.SSL.SSLeay_version(OpenSSL.SSL.SSLEAY_VERSION).decode(),
        "haproxy": _first_line([tool_path("haproxy"), "-v"], r"\d+\.\d+\.\d+\S*"),
        "nginx": _first_line([tool_path("nginx"), "-v"], r"\d+\.\d+\.\d+"),
        "sniproxy": _first_line([tool_path("sniproxy"), "-V"]),
        "wrk": _first_line([tool_path("wrk"), "-v"], r"\d+\.\d+\.\d+"),
        "openssl": _first_line([tool_path("openssl"), "version"], r"\d+\.\d+\.\d+\S*"),
    }
    return found


def _python_build() -> str:
    """How the interpreter was built, as far as it can tell: the sixth session measured
    Debian's python3.11 (libpython linked into the executable, built with profile-guided
    optimisation) at ~3% less worker CPU per connection than pyenv's default build
    (libpython as a shared library, no ``--enable-optimizations``)."""
    import sysconfig

    with open("/proc/self/maps") as maps:
        shared = "libpython" in maps.read()
    build = ["libpython shared" if shared else "libpython linked in"]
    args = sysconfig.get_config_var("CONFIG_ARGS") or ""
    build += [
        name
        for name, option in (("PGO", "--enable-optimizations"), ("LTO", "--with-lto"))
        if option in args
    ]
    return ", ".join(build)


def export_revision(rev: str, dest: Path) -> None:
    """Benchmark the committed tree `rev` of this checkout: `git archive` it into `dest`."""
    global TLSGATE, TLSGATE_LABEL
    TLSGATE_LABEL = export_tree(rev, dest)
    TLSGATE = dest


def export_tree(rev: str, dest: Path) -> str:
    """`git archive` the committed tree `rev` of this checkout into `dest`; its label."""
    result = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", f"{rev}^{{commit}}"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if result.returncode != 0:
        raise SetupError(f"no such revision {rev!r}: {result.stderr.strip()}")
    dest.mkdir()
    archive = subprocess.Popen(["git", "-C", str(REPO), "archive", rev], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, check=True, timeout=120)
    if archive.wait(60) != 0:
        raise SetupError(f"git archive {rev} failed")
    return f"commit {result.stdout.strip()}"


def _git_head() -> str:
    if TLSGATE_LABEL:
        return TLSGATE_LABEL
    if not (TLSGATE / ".git").exists():
        return str(TLSGATE)
    try:
        result = subprocess.run(
            ["git", "-C", str(TLSGATE), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except OSError:
        return "no git"
    return result.stdout.strip() or "no git"
