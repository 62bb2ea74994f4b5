"""Alcor at scale on this one machine: compute nodes x VMs programmed through goal states, beside two bare
rates of creating the same VM namespaces, in one run: on a Linux bridge per node (one `ip -batch`: the
kernel's floor), and on a userspace OVS per node as a compute node has (tagged br-int ports, addresses).

    .venv/bin/python benchmarks/alcor_scale.py --nodes 100 --vms 100      # 10,000 ports
    .venv/bin/python benchmarks/alcor_scale.py --nodes 4 --vms 10 --neighbours 10000,100000

Reports ports/s, latency percentiles, memory per compute node and per VM, and the agent's time for
1 port + N neighbours in one goal state: on a spare compute node the load leaves alone (the goal state is
all the node has), and on a node the load filled (its userspace OVS polls each of its ports between every
50 OpenFlow messages, so there the ports cost too). Targets (issue 6): the 10,000-port run fits in 24 GB;
goal-state programming reaches at least half the bare namespace rate; 1 port + 10,000 neighbours
in under 0.5 s, 100,000 in under 5 s (ACA's best: 534 ms and 5.2 s).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulator import Emulation, load_text  # noqa: E402
from emulator.alcor import controller, goalstates  # noqa: E402
from emulator.alcor import load as loadtest  # noqa: E402
from emulator.alcor.dataplane import OvsDataplane  # noqa: E402
from emulator.runtime import ovsinstance, processes  # noqa: E402
from provisioners import nsconfig  # noqa: E402

#: A compute node the load leaves alone: where "1 port + N neighbours" is the node's whole goal state.
SPARE = "cn0"


def topology(nodes: int, spare: bool = False) -> str:
    names = ([SPARE] if spare else []) + [f"cn{i}" for i in range(1, nodes + 1)]
    lines = ["version: 1", "name: alcor_scale", "defaults: {subnet: 10.211.0.0/16}", "nodes:", "  tor: {kind: switch}"]
    lines += [f"  {n}: {{kind: compute}}" for n in names]
    lines += ["links:"] + [f"  - endpoints: [{n}, tor]" for n in names]
    return "\n".join(lines) + "\n"


def mem_available_kb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


def rss_kb_of_compute_nodes(experiment: str) -> tuple[int, int]:
    """Summed RSS of every process whose command line names a compute node directory, and their count."""
    mark = f"/run/cloudemu/{experiment}/"
    total = count = 0
    for pid in processes.owned_by_marker(mark):
        try:
            if f"{mark}.ovs-".encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue  # the switches' own OVS
            status = Path(f"/proc/{pid}/status").read_text()
            total += int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmRSS:")))
            count += 1
        except (OSError, StopIteration):
            pass
    return total, count


def settle(limit: float = 180.0, busy: float = 0.15) -> float:
    """Wait until the machine is idle again: the kernel tears deleted namespaces down in the
    background for tens of seconds, which would slow whatever is measured next."""
    t0 = time.monotonic()

    def busy_fraction() -> float:
        def ticks() -> tuple[int, int]:
            values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
            return sum(values), values[3] + values[4]  # total, idle + iowait
        (t1, i1) = ticks()
        time.sleep(1)
        (t2, i2) = ticks()
        return 1 - (i2 - i1) / max(1, t2 - t1)
    while time.monotonic() - t0 < limit and busy_fraction() > busy:
        pass
    return round(time.monotonic() - t0, 1)


def bare_namespaces(nodes: int, per_node: int) -> dict:
    """The same VM namespaces without goal states, in one `ip -batch`: netns, a veth moved in and up, its
    peer on a Linux bridge per compute node (the machine's baseline; a userspace OVS with thousands of
    ports takes minutes to build and remove, which is why each compute node has its own)."""
    count = nodes * per_node
    lines = [f"link add bare-br{b} type bridge" for b in range(nodes)] + [f"link set bare-br{b} up" for b in range(nodes)]
    for i in range(count):
        lines += [f"netns add bare-vm{i}", f"link add bvm{i} type veth peer name eth0 netns bare-vm{i}",
                  f"link set bvm{i} master bare-br{i // per_node} up"]
    t0 = time.perf_counter()
    subprocess.run(["ip", "-batch", "-"], input="\n".join(lines) + "\n", text=True, check=True)
    seconds = time.perf_counter() - t0
    subprocess.run(["ip", "-batch", "-"], input="".join(f"netns del bare-vm{i}\n" for i in range(count))
                   + "".join(f"link del bare-br{b}\n" for b in range(nodes)), text=True, check=True)
    return {"namespaces": count, "bridges": nodes, "seconds": round(seconds, 2), "per_s": round(count / seconds, 1)}


def bare_ovs(nodes: int, per_node: int) -> dict:
    """The same VM namespaces on what a compute node really has: each node its own userspace OVS (in a
    namespace of its own) with br-int, each VM a namespace whose veth is a tagged br-int port, with its
    address and link up; one `ip -batch`, one ovs-vsctl transaction and one netlink pass per node, no
    goal states, no flows. The OVS daemons start before the clock does, tuned as the agent tunes its own
    (revalidators wake every 10 s; the node's devices have no IPv6), so the baseline is not handicapped."""
    work = Path(tempfile.mkdtemp(prefix="bare-ovs-"))
    hosts = [f"bare-cn{n}" for n in range(nodes)]
    subprocess.run(["ip", "-batch", "-"], input="".join(f"netns add {h}\n" for h in hosts), text=True, check=True)
    daemons = []
    try:
        for h in hosts:
            daemons += ovsinstance.start(work / h, ["nsenter", f"--net=/run/netns/{h}"])
            subprocess.run(["ovs-vsctl", f"--db={ovsinstance.db(work / h)}", "add-br", "br-int", "--", "set", "bridge",
                            "br-int", "datapath_type=netdev", "--", *OvsDataplane.QUIET], check=True)
        t0 = time.perf_counter()
        for n, h in enumerate(hosts):
            vms = [(f"bare-vm{n}-{i}", f"btap{n}-{i}", f"10.{100 + n // 250}.{n % 250}.{i + 2}/16") for i in range(per_node)]
            lines = [f"netns add {vm}" for vm, _, _ in vms]
            lines += [f"link add {tap} netns {h} type veth peer name eth0 netns {vm}" for vm, tap, _ in vms]
            subprocess.run(["ip", "-batch", "-"], input="\n".join(lines) + "\n", text=True, check=True)
            ports = [x for i, (_, tap, _) in enumerate(vms) for x in ("--", "add-port", "br-int", tap, f"tag={i % 4095 + 1}")]
            subprocess.run(["ovs-vsctl", f"--db={ovsinstance.db(work / h)}", *ports], check=True)
            nsconfig.configure([nsconfig.NamespaceConfig(vm, [nsconfig.IfaceConfig("eth0", ip)], ipv6=False)
                                for vm, _, ip in vms] + [nsconfig.NamespaceConfig(h, [nsconfig.IfaceConfig(tap)
                                                                                      for _, tap, _ in vms], ipv6=False)])
        seconds = time.perf_counter() - t0
    finally:
        processes.end(daemons)
        subprocess.run(["ip", "-force", "-batch", "-"], text=True,
                       input="".join(f"netns del bare-vm{n}-{i}\n" for n in range(nodes) for i in range(per_node))
                       + "".join(f"netns del {h}\n" for h in hosts))
        shutil.rmtree(work, ignore_errors=True)
    count = nodes * per_node
    return {"namespaces": count, "ovs_instances": nodes, "seconds": round(seconds, 2), "per_s": round(count / seconds, 1)}


def neighbours_once(target: str, host: str, count: int, run: int) -> dict:
    """1 port on `host` + `count` neighbours elsewhere, in one goal state: the agent's own time."""
    vpc = goalstates.Vpc(f"nb{run}", 200_000 + run, "10.32.0.0/12")
    remote = loadtest.fake_hosts(1)[0]
    ports = [goalstates.Port(f"nb{run}p0", vpc, host, "10.32.0.2", f"02:fe:{run:02x}:00:00:00")]
    ports += [goalstates.Port(f"nb{run}n{i}", vpc, remote, f"10.{32 + (i + 3) // 65536}.{(i + 3) // 256 % 256}.{(i + 3) % 256}",
                              f"02:fd:{run:02x}:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}") for i in range(count)]
    message = goalstates.per_host(ports)[host]
    (pushed,) = controller.stream(target, [message])
    return {"neighbours": count, "agent_s": round(pushed.agent_us / 1e6, 3), "round_trip_s": round(pushed.seconds, 3),
            "failed": len(pushed.failed), "message_mb": round(message.ByteSize() / 1e6, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=100, help="compute nodes")
    p.add_argument("--vms", type=int, default=100, help="VMs per compute node")
    p.add_argument("--vpcs", type=int, default=100)
    p.add_argument("--batch", type=int, default=0, help="ports per goal-state round (0: one message per host)")
    p.add_argument("--concurrency", type=int, default=controller.DEFAULT_CONCURRENCY, help="messages in flight at once")
    p.add_argument("--neighbours", default="10000,100000", help="1 port + N neighbours runs, comma separated ('' for none)")
    args = p.parse_args()
    ports = args.nodes * args.vms
    report: dict = {"compute_nodes": args.nodes, "vms_per_node": args.vms, "ports": ports}

    report["settled_s"] = [settle()]  # namespaces deleted just before (an earlier run) are still being torn down
    report["bare"] = bare_namespaces(args.nodes, args.vms)
    print("bare (Linux bridges):", report["bare"], flush=True)
    report["settled_s"].append(settle())
    report["bare_ovs"] = bare_ovs(args.nodes, args.vms)
    print("bare (an OVS per node):", report["bare_ovs"], flush=True)
    report["settled_s"].append(settle())

    before = mem_available_kb()
    spare = bool(args.neighbours)
    emu = Emulation(load_text(topology(args.nodes, spare)))
    t0 = time.perf_counter()
    emu.up()
    report["up_s"] = round(time.perf_counter() - t0, 2)
    report["up_phases"] = {k: round(v, 2) for k, v in emu.timings.items()}
    try:
        after_nodes = mem_available_kb()
        report["settled_s"].append(settle())
        targets = controller.agent_targets(emu.plan)
        spare_ip = emu.plan.node(SPARE).ip.split("/")[0] if spare else None
        spare_target = targets.pop(spare_ip, None)
        spec = loadtest.LoadSpec(args.vpcs, ports // args.vpcs, batch=args.batch, concurrency=args.concurrency, run=0)
        result = loadtest.run(spec, targets, sorted(targets))
        summary = result.summary()
        after_vms = mem_available_kb()
        rss, procs = rss_kb_of_compute_nodes(emu.name)
        report["goal_states"] = {k: summary[k] for k in ("ports", "messages", "seconds", "ports_per_s", "errors",
                                                         "port_latency_ms", "message_latency_ms", "agent_time_ms")}
        generated = loadtest.generate_ports(spec, sorted(targets))
        report["reachability"] = loadtest.sample_reachability(generated, loadtest.vm_pinger(emu.plan, emu.target.run),
                                                              10)
        report["memory"] = {
            "machine_used_gb": round((before - after_vms) / 1024 / 1024, 2),
            "per_compute_node_mb": round((before - after_nodes) / 1024 / (args.nodes + spare), 1),
            "compute_node_process_rss_mb": round(rss / 1024 / (args.nodes + spare), 1), "processes": procs,
            "per_vm_kb": round((after_nodes - after_vms) / ports, 1)}
        report["ratio_to_bare"] = round(summary["ports_per_s"] / report["bare"]["per_s"], 2)
        report["ratio_to_bare_ovs"] = round(summary["ports_per_s"] / report["bare_ovs"]["per_s"], 2)
        print("goal states:", report["goal_states"], flush=True)
        if spare:  # on the spare node (nothing else on it), then on a node the load filled
            counts = [int(n) for n in args.neighbours.split(",")]
            busy = sorted(targets)[0]
            report["neighbours"] = [neighbours_once(spare_target, spare_ip, n, run) for run, n in enumerate(counts, 1)]
            report["neighbours_on_a_loaded_node"] = [neighbours_once(targets[busy], busy, n, run)
                                                     for run, n in enumerate(counts, len(counts) + 1)]
            print("neighbours:", report["neighbours"], "on a loaded node:", report["neighbours_on_a_loaded_node"],
                  flush=True)
    finally:
        t0 = time.perf_counter()
        result = emu.down()
        report["down_s"] = round(time.perf_counter() - t0, 2)
        report["down_clean"] = result.clean
    print(json.dumps(report, indent=2))
    print(f"\ngoal states {report['goal_states']['ports_per_s']} ports/s vs bare {report['bare']['per_s']} namespaces/s "
          f"on Linux bridges: {report['ratio_to_bare']}x, vs bare {report['bare_ovs']['per_s']} namespaces/s on an OVS per "
          f"node: {report['ratio_to_bare_ovs']}x (target >= 0.5); machine memory used "
          f"{report['memory']['machine_used_gb']} GB (target < 24)")


if __name__ == "__main__":
    main()
