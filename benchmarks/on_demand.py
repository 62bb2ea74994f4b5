"""On-demand neighbours beside pushed ones: what a VM's first packet costs when its host must ask the NCM.

Two compute nodes, P VMs on each in one VPC. Mode "pushed": `up` sends every neighbour ahead, as Alcor's DPM does.
Mode "on-demand": the nodes have `on_demand: true`, cloudemu's NCM serves them, and each first ping makes the
sender's host ask (HostRequest over RequestGoalStates) and, for the answer, the receiver's host too. For each
mode: the first ping of each of P pairs (cn1's VM i to cn2's VM i), timed from here (`ip netns exec ping`, about
3 ms of it the process), and in on-demand mode the NCM's answer times. The ratio is on-demand / pushed.

    sudo .venv/bin/python benchmarks/on_demand.py --pairs 20 --runs 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulator import Emulation, load_text  # noqa: E402
from emulator.alcor import ncm as ncm_role  # noqa: E402


def topology(name: str, pairs: int, lazy: bool) -> str:
    mode = ", on_demand: true" if lazy else ""
    vms = "".join(f"  a{i}: {{kind: vm, on: cn1, vpc: app, ip: 10.9.0.{10 + i}/24}}\n"
                  f"  b{i}: {{kind: vm, on: cn2, vpc: app, ip: 10.9.1.{10 + i}/24}}\n" for i in range(pairs))
    return (f"version: 1\nname: {name}\ndefaults: {{subnet: 10.210.0.0/24}}\n"
            "vpcs: {app: {vni: 2601, cidr: 10.9.0.0/16}}\n"
            f"nodes:\n  tor: {{kind: switch}}\n  cn1: {{kind: compute{mode}}}\n  cn2: {{kind: compute{mode}}}\n{vms}"
            "links:\n  - endpoints: [cn1, tor]\n  - endpoints: [cn2, tor]\n")


def first_pings(emu: Emulation, pairs: int) -> list[float]:
    out = []
    for i in range(pairs):
        t0 = time.perf_counter()
        ok = emu.node(f"a{i}").run(["ping", "-c", "1", "-W", "3", f"10.9.1.{10 + i}"]).returncode == 0
        out.append((time.perf_counter() - t0) * 1e3 if ok else float("inf"))
    return out


def one(pairs: int, lazy: bool) -> dict:
    name = f"bench_od_{'lazy' if lazy else 'pushed'}"
    emu = Emulation(load_text(topology(name, pairs, lazy))).up()
    server = None
    try:
        if lazy:
            server, served = ncm_role.serve(emu.plan)
        times = first_pings(emu, pairs)
        out = {"first_ping_ms": statistics.median(times), "lost": sum(t == float("inf") for t in times)}
        if lazy:
            out["ncm"] = served.summary()
        return out
    finally:
        if server is not None:
            ncm_role.stop(server, emu.plan)
        emu.down()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    runs = []
    for _ in range(args.runs):
        pushed, lazy = one(args.pairs, False), one(args.pairs, True)
        runs.append({"pushed_first_ping_ms": round(pushed["first_ping_ms"], 2),
                     "on_demand_first_ping_ms": round(lazy["first_ping_ms"], 2),
                     "ratio": round(lazy["first_ping_ms"] / pushed["first_ping_ms"], 2),
                     "lookups": lazy["ncm"]["requests"], "answered": lazy["ncm"]["answered"],
                     "ncm_answer_p50_ms": lazy["ncm"]["answer_ms"]["p50"], "lost": pushed["lost"] + lazy["lost"]})
        print(json.dumps(runs[-1]), flush=True)

    def summary(key: str) -> str:
        values = sorted(r[key] for r in runs)
        return f"{statistics.median(values)} ({values[0]}-{values[-1]})"
    print(json.dumps({"pairs": args.pairs, "runs": len(runs), **{k: summary(k) for k in runs[0] if k != "lost"},
                      "lost": sum(r["lost"] for r in runs)}, indent=1))


if __name__ == "__main__":
    main()
