"""Making N named namespaces: `ip netns add` (one `ip -batch`) against cloudemu's `netns_add`, side by side, in
batches of 5,000 so that the cost of a batch against the namespaces already there shows.

`ip netns add` re-marks /run/netns shared and recursive before each namespace, walking every mount below it;
emulator.runtime.namespaces does that once. Each run waits for a quiet machine; the last line is the median and
range of each figure.

    sudo .venv/bin/python benchmarks/namespaces.py 20000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from setup_rate import median_range, settle  # noqa: E402

from emulator.runtime.executor import LocalExecutor  # noqa: E402

BATCH = 5000


def batches(total: int, make) -> list[float]:
    """Seconds per batch of BATCH namespaces made by `make(names)`; all removed after."""
    names = [f"bn.{i}" for i in range(total)]
    settle()
    seconds = []
    try:
        for start in range(0, total, BATCH):
            t0 = time.perf_counter()
            make(names[start:start + BATCH])
            seconds.append(time.perf_counter() - t0)
    finally:
        subprocess.run(["ip", "-force", "-batch", "-"], input="".join(f"netns del {n}\n" for n in names), text=True)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("total", type=int)
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    ex = LocalExecutor()
    ways = {"ip netns add": lambda names: ex.ip_batch(f"netns add {n}" for n in names), "netns_add": ex.netns_add}
    rows: dict[str, list[list[float]]] = {way: [] for way in ways}
    for _ in range(args.runs):
        for way, make in ways.items():  # taking turns
            rows[way].append(batches(args.total, make))
            print(json.dumps({way: [round(s, 2) for s in rows[way][-1]]}), flush=True)
    print(json.dumps({way: {"batch_s": [median_range([run[i] for run in runs]) for i in range(len(runs[0]))],
                            "total_s": median_range([sum(run) for run in runs])} for way, runs in rows.items()}))


if __name__ == "__main__":
    main()
