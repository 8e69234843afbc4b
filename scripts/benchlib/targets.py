"""The origin server and the four gateways: their configs, how they start, where they listen.

Everything listens on 127.0.0.1 on free ports chosen at start. One ECDSA P-256
certificate for ``*.bench.test`` serves the origin (passthrough cases: the client's
TLS ends there) and every gateway that terminates (case 3), so all handshakes cost
the same. Session resumption is off everywhere: every connection is a full handshake.

Each gateway gets the same worker count (`WORKERS`): tlsgate ``workers``, HAProxy
``nbthread``, nginx ``worker_processes``, and for sniproxy, which has no worker
setting, as many processes sharing the port through ``reuseport`` (the scaling its
manual describes).

Host names: ``app.bench.test`` is passed through to the origin's TLS port,
``term.bench.test`` is terminated by tlsgate and sent to the origin's plain port.
Nothing resolves ``*.bench.test``: the wrk script connects to 127.0.0.1 itself and
keeps the URL's host for SNI and the Host header, and the Python clients connect to
127.0.0.1 with ``server_hostname`` set, so no system file is touched.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import system
from benchlib.procs import Processes, nofile_limit
from benchlib.system import NGINX_STREAM_MODULE, tool_path

WORKERS = 2
PASS_HOST = "app.bench.test"
TERM_HOST = "term.bench.test"
BIG_FILE = "big.bin"
BIG_SIZE = 64 * 2**20
SMALL_PATH = "/small"
SMALL_BODY = "hello from the origin\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Target:
    """Something wrk can be pointed at: the origin directly, or a gateway in front of it."""

    name: str
    pass_port: int
    term_port: int | None = None
    """Where case 3 connects; None when this target cannot terminate (or not yet)."""
    term_note: str = ""
    procs: list[subprocess.Popen] = field(default_factory=list)
    note: str = ""

    @property
    def is_gateway(self) -> bool:
        return self.name != "direct"

    def roots(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    def term_host(self) -> str:
        return TERM_HOST if self.name == "tlsgate" else PASS_HOST


class Workspace:
    """The run directory: certificate, document root, configs, logs."""

    def __init__(self, root: Path):
        self.root = root
        self.www = root / "www"
        self.www.mkdir()
        (root / "tmp").mkdir()
        self.cert = root / "cert.pem"
        self.key = root / "key.pem"
        self.combined = root / "combined.pem"
        self.origin_tls = free_port()
        self.origin_plain = free_port()

    def prepare(self) -> None:
        subprocess.run(
            [
                tool_path("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-days", "2", "-subj", "/CN=app.bench.test", "-keyout", str(self.key),
                "-out", str(self.cert), "-addext", "subjectAltName=DNS:*.bench.test",
            ],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self.combined.write_text(self.cert.read_text() + self.key.read_text())
        with open(self.www / BIG_FILE, "wb") as f:
            block = bytes(range(256)) * 4096  # 1 MiB, not all zeros
            for _ in range(BIG_SIZE // len(block)):
                f.write(block)

    # -- the origin ------------------------------------------------------------

    def start_origin(self, procs: Processes) -> Target:
        conf = self.root / "origin.conf"
        conf.write_text(
            _nginx_main("origin", self.root)
            + f"""
http {{
    access_log off;
    {_nginx_temp_paths(self.root)}
    default_type application/octet-stream;
    sendfile on;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_header_timeout 300s;
    ssl_certificate {self.cert};
    ssl_certificate_key {self.key};
    ssl_session_cache off;
    ssl_session_tickets off;
    server {{
        listen 127.0.0.1:{self.origin_tls} ssl backlog=4096;
        listen 127.0.0.1:{self.origin_plain} backlog=4096;
        root {self.www};
        location = {SMALL_PATH} {{ return 200 "{SMALL_BODY[:-1]}\\n"; }}
    }}
}}
"""
        )
        proc = procs.start("origin", _nginx_argv(self.root, conf, "origin"))
        return Target(
            "direct",
            self.origin_tls,
            self.origin_tls,
            procs=[proc],
            note="nginx origin, no gateway",
        )

    # -- the gateways ----------------------------------------------------------

    def tlsgate_config(self, port: int, termination: str | None, instance: str = "tlsgate") -> str:
        """tlsgate's config; `termination` is None (passthrough only), "policy" or "policy+tls"."""
        text = f"""[gateway]
listen = ["127.0.0.1:{port}"]
workers = {WORKERS}
state_dir = "{self.root / (instance + "-state")}"
drain_timeout = "1s"
"""
        if termination == "policy+tls":
            text += "\n[tls]\nsession_resumption = false\n"
        text += f"""
[[endpoints]]
name = "app"
url = "tls://{PASS_HOST}"
upstream.url = "127.0.0.1:{self.origin_tls}"
"""
        if termination:
            text += f"""
[[endpoints]]
name = "term"
url = "tls://{TERM_HOST}"
upstream.url = "127.0.0.1:{self.origin_plain}"
[endpoints.traffic_policy]
on_tcp_connect = [{{ actions = [{{ type = "terminate-tls", config = {{ server_certificate = "{self.cert}", server_private_key = "{self.key}" }} }}] }}]
"""
        return text

    def start_tlsgate(
        self, procs: Processes, instance: str = "tlsgate", tree: Path | None = None
    ) -> Target:
        """Start tlsgate from `tree` (default: the benchmarked tree, `system.TLSGATE`)."""
        env = _tlsgate_env(tree or system.TLSGATE)
        port = free_port()
        conf = self.root / f"{instance}.toml"
        accepted: list[str | None] = []
        problems = ""
        for termination in ("policy+tls", "policy", None):
            conf.write_text(self.tlsgate_config(port, termination, instance))
            check = subprocess.run(
                [sys.executable, "-m", "tlsgate", "check", "-c", str(conf)],
                env=env, cwd=self.root, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            if check.returncode == 0:
                accepted.append(termination)
                break
            problems = problems or (check.stdout + check.stderr).strip()
        if not accepted:
            # Even passthrough alone is rejected: that is a real failure, not a missing feature.
            raise RuntimeError(f"tlsgate check rejects the bench config:\n{problems}")
        chosen = accepted[0]
        proc = procs.start(
            instance,
            [sys.executable, "-m", "tlsgate", "start", "-c", str(conf)],
            env=env,
            cwd=self.root,
        )
        target = Target("tlsgate", port, procs=[proc], note=f"{WORKERS} workers, events off")
        if chosen is None:
            target.term_note = (
                "not available yet: `tlsgate check` rejects terminate-tls ("
                + _first_problem(problems)
                + ")"
            )
        else:
            target.term_port = port
            if chosen == "policy":
                target.term_note = (
                    "[tls] session_resumption not accepted yet: resumption left at its default"
                )
        return target

    def start_haproxy(self, procs: Processes, instance: str = "haproxy") -> Target:
        port, term_port = free_port(), free_port()
        conf = self.root / f"{instance}.cfg"
        conf.write_text(
            f"""global
    nbthread {WORKERS}
    maxconn {max(1000, (nofile_limit() - 200) // 2)}
    tune.ssl.cachesize 0
    ssl-default-bind-options no-tls-tickets

defaults
    mode tcp
    timeout connect 10s
    timeout client 5m
    timeout server 5m

frontend passthrough
    bind 127.0.0.1:{port}
    tcp-request inspect-delay 3s
    tcp-request content accept if {{ req.ssl_hello_type 1 }}
    use_backend origin_tls if {{ req.ssl_sni -i {PASS_HOST} }}

backend origin_tls
    server origin 127.0.0.1:{self.origin_tls}

frontend termination
    bind 127.0.0.1:{term_port} ssl crt {self.combined} no-tls-tickets
    default_backend origin_plain

backend origin_plain
    server origin 127.0.0.1:{self.origin_plain}
"""
        )
        proc = procs.start(instance, [tool_path("haproxy"), "-db", "-f", str(conf)])
        return Target(
            "haproxy",
            port,
            term_port,
            procs=[proc],
            note=f"mode tcp, req.ssl_sni, nbthread {WORKERS}",
        )

    def start_nginx(self, procs: Processes, instance: str = "nginx") -> Target:
        port, term_port = free_port(), free_port()
        conf = self.root / f"{instance}.conf"
        conf.write_text(
            f"load_module {NGINX_STREAM_MODULE};\n"
            + _nginx_main(instance, self.root)
            + f"""
stream {{
    map $ssl_preread_server_name $backend {{
        {PASS_HOST} origin_tls;
        default unknown;
    }}
    upstream origin_tls {{ server 127.0.0.1:{self.origin_tls}; }}
    upstream unknown {{ server 127.0.0.1:9; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        ssl_preread on;
        proxy_pass $backend;
    }}
    server {{
        listen 127.0.0.1:{term_port} ssl backlog=4096;
        ssl_certificate {self.cert};
        ssl_certificate_key {self.key};
        ssl_session_cache off;
        ssl_session_tickets off;
        proxy_pass 127.0.0.1:{self.origin_plain};
    }}
}}
"""
        )
        proc = procs.start(instance, _nginx_argv(self.root, conf, instance))
        note = f"stream + ssl_preread, worker_processes {WORKERS}"
        return Target("nginx", port, term_port, procs=[proc], note=note)

    def start_sniproxy(self, procs: Processes, instance: str = "sniproxy") -> Target:
        port = free_port()
        started = []
        sniproxy_pattern = PASS_HOST.replace(
            ".", "\\\\."
        )  # a regex; the config reads "\\" as one "\"
        for index in range(WORKERS):
            conf = self.root / f"{instance}-{index}.conf"
            conf.write_text(
                f"""user root
pidfile {self.root}/{instance}-{index}.pid
error_log {{
    filename {self.root}/{instance}-{index}-error.log
    priority warning
}}
listener 127.0.0.1:{port} {{
    protocol tls
    reuseport yes
    table bench
}}
table bench {{
    ^{sniproxy_pattern}$ 127.0.0.1:{self.origin_tls}
}}
"""
            )
            argv = [tool_path("sniproxy"), "-f", "-n", str(nofile_limit()), "-c", str(conf)]
            started.append(procs.start(f"{instance}-{index}", argv))
        note = f"{WORKERS} processes sharing the port with reuseport (no worker setting)"
        return Target("sniproxy", port, procs=started, note=note, term_note="cannot terminate TLS")


def _tlsgate_env(tree: Path) -> dict[str, str]:
    # Run from the run directory: `python -m` puts the working directory first on sys.path,
    # which would import a tlsgate from wherever the bench was started instead of this one.
    return {"PYTHONPATH": str(tree)}


def _first_problem(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:160] if lines else "no details"


def _nginx_main(name: str, root: Path) -> str:
    return f"""user root;
worker_processes {WORKERS};
worker_rlimit_nofile {nofile_limit()};
pid {root}/nginx-{name}.pid;
error_log {root}/nginx-{name}-error.log warn;
daemon off;
events {{ worker_connections 60000; multi_accept off; }}
"""


def _nginx_temp_paths(root: Path) -> str:
    return " ".join(
        f"{kind}_temp_path {root}/tmp/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )


def _nginx_argv(root: Path, conf: Path, name: str) -> list[str]:
    return [
        tool_path("nginx"),
        "-p",
        str(root),
        "-e",
        str(root / f"nginx-{name}-error.log"),
        "-c",
        str(conf),
    ]
