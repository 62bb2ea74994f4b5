"""Hollow compute nodes at region scale: up, down and memory per node, beside the floors they stand on.

One region rack holds every hollow node (one top-of-rack switch, one spine), so the figures are the
hollow nodes' own: the packs' namespaces, links, addresses and processes. Beside it, in the same run:
the bare cost of the same namespaces, veths and addresses (`ip -batch`, the kernel's floor), and a
full compute node's memory from the last alcor_scale run for the ratio.

    sudo .venv/bin/python benchmarks/hollow_scale.py --nodes 100000

Targets (issue 18): 100,000 hollow nodes up in <= 60 s, down in <= 20 s, <= 50 KB per node everything
included, nothing left. Then, as asked:
  --messages M       one goal state (VPC, subnet, one port) to M of them, each over its node's own stream:
                     messages/s (target >= 2,000), latency percentiles, CPU of each side;
  --neighbours N     1 port + N neighbours to one node, then the same table to two more (target < 0.5 s);
  --vpc-ports P      one VPC of P ports over every node, each node sent the VPC's whole neighbour table
                     (`alcor load --neighbours all`): total time, per-host convergence, memory;
  --idle-connections C  alone: a pack of C nodes and C idle HTTP/2 connections to it, its memory per connection.

    sudo .venv/bin/python benchmarks/hollow_scale.py --nodes 1000 --vpc-ports 100000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulator import Emulation, load_text  # noqa: E402
from emulator.alcor import controller, goalstates  # noqa: E402
from emulator.alcor import load as loadtest  # noqa: E402
from emulator.compiler.compile import HOLLOW_PACK  # noqa: E402

FULL_NODE_MB = 34.3  # alcor_scale, 20 nodes x 50 VMs: memory per full compute node (README)


def topology(nodes: int, name: str) -> str:
    return (f"version: 1\nname: {name}\ndefaults: {{subnet: 10.64.0.0/12}}\n"
            f"topology: {{generator: region, racks: 1, hosts_per_rack: {nodes}, spines: 1, uplinks: 1, compute: hollow}}\n")


def used_memory_mb() -> float:
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    kb = int(info["MemTotal"].split()[0]) - int(info["MemAvailable"].split()[0])
    return kb / 1024


def ours(pattern: str) -> list[str]:
    """The pids of our processes whose command line holds `pattern`."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if pattern in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode():
                out.append(pid)
        except OSError:
            continue
    return out


def rss_mb(pattern: str) -> tuple[int, float]:
    """How many of our processes match, and their resident memory."""
    total, pids = 0, ours(pattern)
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            continue
    return len(pids), total / 2**20


def cpu_seconds(pattern: str) -> float:
    """User and system CPU of our processes whose command line holds `pattern`."""
    total = 0
    for pid in ours(pattern):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            continue
    return total / os.sysconf("SC_CLK_TCK")


def settle(seconds: float = 2.0) -> None:
    time.sleep(seconds)


def run_cloudemu(nodes: int, messages: int, concurrency: int, neighbours: int = 0, vpc_ports: int = 0) -> dict:
    name = "hollowbench"
    emu = Emulation(load_text(topology(nodes, name)))
    settle()
    before = used_memory_mb()
    t0 = time.perf_counter()
    emu.up()
    up = time.perf_counter() - t0
    settle()
    after = used_memory_mb()
    procs, rss = rss_mb(f"emulator.alcor.hollow --dir /run/cloudemu/{name}/")
    out = {"nodes": nodes, "up_s": round(up, 2), "packs": procs, "phases": {k: round(v, 2) for k, v in emu.timings.items()},
           "machine_memory_mb": round(after - before, 1), "per_node_kb": round((after - before) * 1024 / nodes, 1),
           "pack_rss_mb": round(rss, 1), "pack_rss_per_node_kb": round(rss * 1024 / nodes, 1)}
    try:
        if messages:
            out["load"] = push_one_port_each(emu, messages, concurrency)
            out["per_node_kb_after_load"] = round((used_memory_mb() - before) * 1024 / nodes, 1)
        if neighbours:
            out["neighbours"] = one_port_and_neighbours(emu, neighbours)
        if vpc_ports:
            out["vpc"] = whole_vpc(emu, vpc_ports, concurrency)
            out["vpc"]["machine_memory_mb_after"] = round(used_memory_mb() - before, 1)
            out["vpc"]["pack_rss_mb_after"] = round(rss_mb(f"emulator.alcor.hollow --dir /run/cloudemu/{name}/")[1], 1)
    finally:
        t0 = time.perf_counter()
        res = emu.down()
    out["down_s"] = round(time.perf_counter() - t0, 2)
    out["clean"] = res.clean
    return out


def push_one_port_each(emu: Emulation, count: int, concurrency: int) -> dict:
    """A VPC, its subnet and one port to each of `count` hollow nodes, one message on each node's own stream."""
    targets = controller.agent_targets(emu.plan)
    hosts = sorted(targets)[:count]
    vpc = goalstates.Vpc("bench", 4001, "10.240.0.0/14")
    ports = [goalstates.Port(f"b{i}", vpc, host, f"10.{240 + (i >> 16)}.{(i >> 8) & 255}.{i & 255 or 1}",
                             f"fa:16:3e:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}")
             for i, host in enumerate(hosts)]
    messages = {p.host_ip: [goalstates.per_host([p])[p.host_ip]] for p in ports}
    packs_before = cpu_seconds(f"emulator.alcor.hollow --dir /run/cloudemu/{emu.name}/")
    t0, cpu0 = time.perf_counter(), time.process_time()
    pushed = controller.push_each(targets, messages, connections=concurrency)
    seconds, controller_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    packs_cpu = cpu_seconds(f"emulator.alcor.hollow --dir /run/cloudemu/{emu.name}/") - packs_before
    lat = sorted(p.seconds * 1000 for p in pushed)

    def q(f: float) -> float:
        return round(lat[min(len(lat) - 1, int(f * len(lat)))], 1)
    return {"messages": len(pushed), "seconds": round(seconds, 2), "messages_per_s": round(len(pushed) / seconds, 1),
            "latency_ms": {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99)},
            "cpu_s": {"controller": round(controller_cpu, 2), "hollow packs": round(packs_cpu, 2)},
            "errors": sum(1 for p in pushed if p.failed), "agent_ms_median": round(statistics.median(
                p.agent_us for p in pushed) / 1000, 2)}


def one_port_and_neighbours(emu: Emulation, count: int) -> dict:
    """1 port + `count` neighbours to one node, then the same table (each with its own port) to two more: the
    first read by the pack, the others found again by their bytes."""
    targets = controller.agent_targets(emu.plan)
    hosts = sorted(targets)[:3]
    vpc = goalstates.Vpc("nb", 4002, "10.128.0.0/9")
    far = [goalstates.Port(f"f{i}", vpc, f"10.9.{(i >> 8) & 255}.{1 + (i & 127)}", f"10.{129 + (i >> 16)}."
                           f"{(i >> 8) & 255}.{i & 255}", f"fa:16:3e:{1 + (i >> 16):02x}:{(i >> 8) & 255:02x}:{i & 255:02x}")
           for i in range(count)]
    table = goalstates.table(far)
    calls = []
    for k, host in enumerate(hosts):
        own = goalstates.message_for({}, host)
        goalstates.add(own, host, goalstates.Port(f"me{k}", vpc, host, f"10.128.0.{5 + k}", f"fa:16:3e:00:00:{5 + k:02x}"))
        data = goalstates.compose(own, host, [table])
        t0 = time.perf_counter()
        (pushed,) = controller.push_each({host: targets[host]}, {host: [lambda data=data: data]})
        calls.append({"round_trip_s": round(time.perf_counter() - t0, 3), "call_s": round(pushed.seconds, 3),
                      "agent_s": round(pushed.agent_us / 1e6, 3), "failed": len(pushed.failed)})
    return {"neighbours": count, "message_mb": round(len(data) / 1e6, 1), "first": calls[0], "again": calls[1:]}


def whole_vpc(emu: Emulation, ports: int, concurrency: int) -> dict:
    """One VPC of `ports` ports over every hollow node; each node gets its ports and the VPC's whole table."""
    targets = controller.agent_targets(emu.plan)
    spec = loadtest.LoadSpec(1, ports, neighbours="all", concurrency=concurrency, samples=0)
    packs_before = cpu_seconds(f"emulator.alcor.hollow --dir /run/cloudemu/{emu.name}/")
    cpu0 = time.process_time()
    result = loadtest.run(spec, targets)
    summary = result.summary()
    packs_cpu = cpu_seconds(f"emulator.alcor.hollow --dir /run/cloudemu/{emu.name}/") - packs_before
    return {"ports": ports, "hosts": len(targets), "entries": ports * len(targets), "seconds": summary["seconds"],
            "host_convergence_ms": summary["message_latency_ms"], "agent_ms": summary["agent_time_ms"],
            "errors": summary["errors"], "cpu_s": {"controller": round(time.process_time() - cpu0, 1),
                                                  "hollow packs": round(packs_cpu, 1)}}


def idle_connections(count: int) -> dict:
    """A pack process of `count` nodes on its own (no namespace), then `count` connections that only say
    HTTP/2's preface and SETTINGS: what an idle connection costs the pack (the gRPC stack's choice, issue 18)."""
    import socket
    import tempfile

    from emulator.alcor import http2

    with tempfile.TemporaryDirectory() as tmp:
        nodes = Path(tmp, "nodes")
        nodes.write_text("".join(f"cn{i} 10.70.{i >> 8 & 255}.{i & 255}\n" for i in range(count)))
        pack = subprocess.Popen([sys.executable, "-m", "emulator.alcor.hollow", "--dir", tmp, "--nodes", str(nodes),
                                 "--vm-prefix", "bench.", "--listen", ""], stdout=subprocess.PIPE)
        try:
            pack.stdout.readline()  # ready

            def rss_kb() -> float:
                return int(Path(f"/proc/{pack.pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024
            settle(0.5)
            idle = rss_kb()
            conns = []
            for _ in range(count):
                s = socket.socket(socket.AF_UNIX)
                s.connect(f"{tmp}/agent.sock")
                s.sendall(http2.PREFACE + http2.frame(http2.SETTINGS, 0, 0))
                conns.append(s)
            settle()
            per_connection = (rss_kb() - idle) / count
            for s in conns:
                s.close()
        finally:
            pack.terminate()
            pack.wait()
    return {"nodes": count, "pack_mb": round(idle / 1024, 1), "per_connection_kb": round(per_connection, 2)}


def run_bare(nodes: int) -> dict:
    """The floor: the same layout (a namespace and a veth per HOLLOW_PACK nodes, their addresses on it), one
    `ip -batch` for the namespaces and veths and one per namespace for its addresses; no process, no journal."""
    packs = range((nodes + HOLLOW_PACK - 1) // HOLLOW_PACK)
    lines = [line for k in packs for line in (f"netns add bare.hollow{k}",
                                              f"link add bh-{k} type veth peer name eth0 netns bare.hollow{k}")]
    t0 = time.perf_counter()
    subprocess.run(["ip", "-batch", "-"], input="\n".join(lines) + "\n", text=True, check=True)
    for k in packs:
        first, last = k * HOLLOW_PACK + 1, min(nodes, (k + 1) * HOLLOW_PACK)
        addresses = "".join(f"addr add 10.{64 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}/12 dev eth0\n"
                            for i in range(first, last + 1))
        subprocess.run(["ip", "-n", f"bare.hollow{k}", "-batch", "-"], input=addresses, text=True, check=True)
    up = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run(["ip", "-batch", "-"], input="".join(f"netns del bare.hollow{k}\n" for k in packs), text=True,
                   check=True)
    return {"up_s": round(up, 2), "down_s": round(time.perf_counter() - t0, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--messages", type=int, default=0, help="one port to this many nodes, each on its own stream")
    ap.add_argument("--neighbours", type=int, default=0, help="1 port + this many neighbours to one node, then two more")
    ap.add_argument("--vpc-ports", type=int, default=0, help="one VPC of this many ports, its whole table to every node")
    ap.add_argument("--concurrency", type=int, default=256, help="connections open at once")
    ap.add_argument("--idle-connections", type=int, default=0, help="alone: memory per idle connection to a pack")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.idle_connections:
        print(json.dumps(idle_connections(args.idle_connections)))
        return 0
    result = {"cloudemu": run_cloudemu(args.nodes, args.messages, args.concurrency, args.neighbours, args.vpc_ports),
              "bare addresses": run_bare(args.nodes)}
    c, b = result["cloudemu"], result["bare addresses"]
    result["ratio_up_vs_bare"] = round(c["up_s"] / max(b["up_s"], 1e-3), 2)
    result["memory_vs_full_node"] = round(FULL_NODE_MB * 1024 / max(c["per_node_kb"], 1e-3), 0)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.nodes} hollow nodes: up {c['up_s']} s (bare addresses {b['up_s']} s, {result['ratio_up_vs_bare']}x), "
              f"down {c['down_s']} s, {c['per_node_kb']} KB per node ({c['packs']} packs, RSS {c['pack_rss_per_node_kb']} "
              f"KB per node), a full compute node takes {result['memory_vs_full_node']:.0f}x that; clean {c['clean']}")
        if "load" in c:
            ld = c["load"]
            print(f"load: {ld['messages']} messages in {ld['seconds']} s = {ld['messages_per_s']}/s, latency p50 "
                  f"{ld['latency_ms']['p50']} p90 {ld['latency_ms']['p90']} p99 {ld['latency_ms']['p99']} ms, "
                  f"errors {ld['errors']}; CPU: controller {ld['cpu_s']['controller']} s, packs "
                  f"{ld['cpu_s']['hollow packs']} s")
        if "neighbours" in c:
            nb = c["neighbours"]
            print(f"1 port + {nb['neighbours']} neighbours ({nb['message_mb']} MB): first {nb['first']}; "
                  f"the same table again {nb['again']}")
        if "vpc" in c:
            v = c["vpc"]
            print(f"a VPC of {v['ports']} ports over {v['hosts']} nodes ({v['entries']:,} neighbour entries): "
                  f"{v['seconds']} s, host convergence {v['host_convergence_ms']}, errors {v['errors']}, CPU "
                  f"{v['cpu_s']}, machine memory {v['machine_memory_mb_after']} MB (packs' RSS {v['pack_rss_mb_after']} MB)")
    return 0 if c["clean"] else 1


if __name__ == "__main__":
    sys.exit(main())
