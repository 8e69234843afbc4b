"""atheris harness: the config loader (TOML text and dicts), and dump_config -> parse_config round trips.

The check itself is fuzzchecks/config.py. Usage (libFuzzer arguments pass through):

    python scripts/fuzz/fuzz_config.py -max_total_time=600 -timeout=5 -rss_limit_mb=2048
    python scripts/fuzz/fuzz_config.py path/to/crash-file     # replay one input
"""

import fuzzlib

if __name__ == "__main__":
    fuzzlib.run("config")
