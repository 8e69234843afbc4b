"""atheris harness: tlsgate.policy.load.parse_policy on YAML/JSON text and schema-guided maps.

The check itself is fuzzchecks/policy.py. Usage (libFuzzer arguments pass through):

    python scripts/fuzz/fuzz_policy.py -max_total_time=600 -timeout=5 -rss_limit_mb=2048
    python scripts/fuzz/fuzz_policy.py path/to/crash-file     # replay one input
"""

import fuzzlib

if __name__ == "__main__":
    fuzzlib.run("policy")
