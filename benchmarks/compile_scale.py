"""Compiler scale: `cloudemu plan region.yaml --machines K --out DIR` end to end, beside a bare pymetis call.

For each size, in one run: the whole command as a user runs it (a fresh process:
imports, YAML, generator, placement, naming, shards on disk), its peak memory
(the process and its forked shard writers, summed: shared pages count twice, so
this is an upper bound), and a bare `pymetis.part_graph` on the same graph (CSR
built beforehand, untimed) -- the floor for a METIS placement.

    .venv/bin/python benchmarks/compile_scale.py            # 10k, 100k, 1M hosts
    .venv/bin/python benchmarks/compile_scale.py --sizes 10000

Target (issue 3): 1M hosts on 1000 machines in under 15 s and under 2 GB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HOSTS_PER_RACK = 40


def region_yaml(hosts: int) -> str:
    return (f"version: 1\nname: region{hosts}\n"
            f"topology: {{generator: region, racks: {hosts // HOSTS_PER_RACK}, hosts_per_rack: {HOSTS_PER_RACK}, "
            "spines: 16, uplinks: 4}\n")


def tree_memory_bytes(pid: int) -> int:
    """Proportional set size of a process and all its descendants: pages the forked writers share count once."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            status = Path(f"/proc/{p}/smaps_rollup").read_text()
            total += int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("Pss:"))) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, StopIteration, ProcessLookupError):
            continue
    return total


def run_cloudemu(topo: Path, machines: int, out: Path) -> dict:
    cmd = [str(ROOT / ".venv" / "bin" / "cloudemu"), "plan", str(topo), "--machines", str(machines), "--out", str(out),
           "-o", "json"]
    peak = 0
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def sample() -> None:
        nonlocal peak
        while proc.poll() is None:
            peak = max(peak, tree_memory_bytes(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - t0
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"cloudemu plan failed ({proc.returncode}): {stderr}")
    index = json.loads(stdout)
    return {"seconds": seconds, "peak_gb": peak / 1e9, "timings": index["timings"], "placement": index["placement"],
            "shards": len(list((out / "shards").iterdir()))}


def run_bare_metis(topo: Path, machines: int) -> dict:
    import pymetis

    from emulator.compiler.graph import graph_of
    from emulator.topology.loader import load_file

    xadj, adjncy, _ = graph_of(load_file(topo)).csr()
    t0 = time.perf_counter()
    cut, _parts = pymetis.part_graph(machines, adjacency=pymetis.CSRAdjacency(xadj, adjncy))
    return {"seconds": time.perf_counter() - t0, "edge_cut": cut}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="hosts")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for hosts in args.sizes:
            machines = max(2, hosts // 1000)
            topo = Path(tmp) / f"region{hosts}.yaml"
            topo.write_text(region_yaml(hosts))
            ours = run_cloudemu(topo, machines, Path(tmp) / f"out{hosts}")
            bare = run_bare_metis(topo, machines)
            rows.append({"hosts": hosts, "machines": machines, "cloudemu": ours, "bare_pymetis": bare,
                         "ratio": ours["seconds"] / bare["seconds"]})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'hosts':>9} {'machines':>8} {'cloudemu s':>10} {'peak GB':>8} {'pymetis s':>9} {'ratio':>6}  "
          f"{'links cut':>9}  phases")
    for r in rows:
        c = r["cloudemu"]
        phases = " ".join(f"{k}={v:.2f}" for k, v in c["timings"].items())
        print(f"{r['hosts']:>9} {r['machines']:>8} {c['seconds']:>10.2f} {c['peak_gb']:>8.2f} "
              f"{r['bare_pymetis']['seconds']:>9.2f} {r['ratio']:>5.1f}x  {c['placement']['links_cut']:>9}  {phases}")


if __name__ == "__main__":
    main()
