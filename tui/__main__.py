"""`python -m tui --socket PATH`: the dashboard without the tlsgate CLI around it."""

from __future__ import annotations

import argparse
import sys

from tui.app import run_dashboard

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tui", description="tlsgate dashboard")
    parser.add_argument("--socket", required=True, help="the gateway's control socket")
    sys.exit(run_dashboard(parser.parse_args().socket))
