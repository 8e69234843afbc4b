"""atheris harness: tlsgate.proto.clienthello.parse_client_hello, then ja4_fingerprint and normalise_sni.

The check itself is fuzzchecks/clienthello.py. Usage (libFuzzer arguments pass through):

    python scripts/fuzz/fuzz_clienthello.py -max_total_time=600 -timeout=5 -rss_limit_mb=2048
    python scripts/fuzz/fuzz_clienthello.py path/to/crash-file     # replay one input
"""

import fuzzlib

if __name__ == "__main__":
    fuzzlib.run("clienthello")
