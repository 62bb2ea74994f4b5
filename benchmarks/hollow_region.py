"""A hollow region across machines: thousands of hollow compute nodes per machine and a few full ones, driven by
`alcor load`, full nodes' VMs pinged, nothing left. On the local testbed (scripts/testbed), three machines:

    sudo scripts/testbed up 3 --out /tmp/cluster.yaml
    sudo .venv/bin/python benchmarks/hollow_region.py --cluster /tmp/cluster.yaml --per-machine 30000
    sudo scripts/testbed down

Target (issue 18): 3 x 30,000 hollow nodes plus a few full ones per machine, load passing, pings passing,
nothing left. Reported: up and down (by phase), packs and nodes per machine, the load's rate and latency,
the pings, and the machine's memory.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.hollow_scale import used_memory_mb  # noqa: E402
from emulator import Emulation, load_text  # noqa: E402
from emulator.alcor import controller  # noqa: E402
from emulator.alcor import load as loadtest  # noqa: E402
from emulator.topology.cluster import load_cluster  # noqa: E402

NAME = "hollowregion"


def topology(machines: int, per_machine: int, rack: int, full_per_machine: int) -> str:
    racks = max(machines, machines * per_machine // rack)
    return (f"version: 1\nname: {NAME}\ndefaults: {{subnet: 10.64.0.0/12}}\n"
            f"topology: {{generator: region, racks: {racks}, hosts_per_rack: {rack}, spines: 1, uplinks: 1, "
            f"compute: hollow, full_racks: {min(racks, machines * full_per_machine)}}}\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cluster", required=True, type=Path, help="the machines (scripts/testbed up N --out FILE)")
    ap.add_argument("--per-machine", type=int, default=30_000, help="compute nodes per machine")
    ap.add_argument("--rack", type=int, default=1000, help="hosts per rack")
    ap.add_argument("--full", type=int, default=2, help="full compute nodes per machine (the first host of a rack)")
    ap.add_argument("--vpc-ports", type=int, default=10, help="ports per VPC of the load (one port per node)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    cluster = load_cluster(args.cluster)
    machines = len(cluster.machines)
    before = used_memory_mb()
    emu = Emulation(load_text(topology(machines, args.per_machine, args.rack, args.full)), cluster=cluster)
    out: dict = {"machines": machines}
    t0 = time.perf_counter()
    emu.up()
    out["up_s"] = round(time.perf_counter() - t0, 1)
    out["up_phases"] = {k: round(v, 1) for k, v in emu.timings.items()}
    try:
        packs = [n for n in emu.plan.nodes if "hollow" in n.options]
        full = [n for n in emu.plan.nodes if "compute" in n.options]
        out["hollow_per_machine"] = dict(Counter(n.machine for p in packs for n in [p] * len(p.options["hollow"]["nodes"])))
        out["packs_per_machine"] = dict(Counter(p.machine for p in packs))
        out["full_per_machine"] = dict(Counter(n.machine for n in full))
        out["memory_after_up_mb"] = round(used_memory_mb() - before, 1)
        targets = controller.agent_targets(emu.plan)
        hosts = sorted(targets)
        spec = loadtest.LoadSpec(len(hosts) // args.vpc_ports, args.vpc_ports, neighbours="all", samples=0)
        result = loadtest.run(spec, targets, hosts)
        s = result.summary()
        out["load"] = {k: s[k] for k in ("ports", "messages", "seconds", "ports_per_s", "errors",
                                          "message_latency_ms", "first_errors")}
        # two VPCs over the full nodes and as many hollow ones, interleaved: full nodes' VMs must reach each other
        # across machines, and not the other VPC's, while hollow nodes share their VPCs
        full_ips = sorted(n.ip.split("/")[0] for n in full)
        hollow_ips = [h for h in hosts if h not in set(full_ips)][:len(full_ips)]
        mixed = [ip for pair in zip(full_ips, hollow_ips, strict=False) for ip in pair]
        ping_spec = loadtest.LoadSpec(2, len(mixed), neighbours="all", samples=0, run=1)
        ping_load = loadtest.run(ping_spec, {ip: targets[ip] for ip in mixed}, mixed)
        vms = [p for p in loadtest.generate_ports(ping_spec, mixed) if p.host_ip in set(full_ips)]
        reach = loadtest.sample_reachability(vms, loadtest.vm_pinger(emu.plan, emu.target.run), 10)
        out["ping_load_errors"] = len(ping_load.errors)
        out["pings"] = {"same_vpc": f"{reach['same_vpc_sampled'][0] - len(reach['same_vpc_failed'])}/"
                                    f"{reach['same_vpc_sampled'][0]}",
                        "other_vpc_reached": f"{len(reach['other_vpc_reached'])}/{reach['other_vpc_sampled'][0]}"}
        out["memory_after_load_mb"] = round(used_memory_mb() - before, 1)
    finally:
        t0 = time.perf_counter()
        res = emu.down()
        out["down_s"] = round(time.perf_counter() - t0, 1)
        out["clean"] = res.clean
    print(json.dumps(out, indent=None if args.json else 2))
    return 0 if out["clean"] and not out.get("load", {}).get("errors") else 1


if __name__ == "__main__":
    sys.exit(main())
