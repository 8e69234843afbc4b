"""atheris harness: tlsgate.proto.proxy_protocol.parse_proxy_header, and build_header -> parse round trips.

The check itself is fuzzchecks/proxy_header.py. Usage (libFuzzer arguments pass through):

    python scripts/fuzz/fuzz_proxy_header.py -max_total_time=600 -timeout=5 -rss_limit_mb=2048
    python scripts/fuzz/fuzz_proxy_header.py path/to/crash-file     # replay one input
"""

import fuzzlib

if __name__ == "__main__":
    fuzzlib.run("proxy_header")
