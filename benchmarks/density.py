"""Density: cloudemu's up and down at H hosts on one machine, the cost per host and the machine's memory per host.

H hosts over S OVS switches in a chain (`linear`), the userspace datapath; MemAvailable before and after `up`
gives the memory per emulated host (kernel objects, OVS daemons, cloudemu's own included). Each run waits for a
quiet machine first and prints one JSON line; the last line is the median and range of each figure.
benchmarks/setup_rate.py (whose run this is) puts the same beside Mininet, a bare loop and the kernel floor.

    sudo .venv/bin/python benchmarks/density.py 20000 400 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from setup_rate import median_range, run_cloudemu  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("hosts", type=int)
    ap.add_argument("switches", type=int)
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("CLOUDEMU_STATE_DIR", tempfile.mkdtemp(prefix="cloudemu-bench-"))
    rows = []
    for _ in range(args.runs):
        up, down, extra = run_cloudemu(args.hosts, args.switches)
        rows.append({"up_s": up, "down_s": down, "per_host_ms": up / args.hosts * 1e3,
                     "mem_kb_per_host": extra["memory_kb_per_host"]})
        print(json.dumps({k: round(v, 2) for k, v in rows[-1].items()} | {"phases": extra["phases"],
                                                                           "down_phases": extra["down_phases"]}),
              flush=True)
    print(json.dumps({"hosts": args.hosts, "switches": args.switches, "runs": args.runs,
                      **{k: median_range([r[k] for r in rows]) for k in rows[0]}}))


if __name__ == "__main__":
    main()
