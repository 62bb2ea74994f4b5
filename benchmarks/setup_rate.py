"""Setup and teardown rate: cloudemu vs Mininet vs a bare `ip -batch`, side by side in one run.

The same topology for all three: H hosts spread over S OVS switches in a chain
(userspace datapath where the kernel module is missing, as here).

    sudo .venv/bin/python benchmarks/setup_rate.py --hosts 1000 --switches 20

Targets (issue 2): cloudemu at least 10x faster than Mininet up and down, and
within 3x of the bare loop (which makes the same namespaces, veths, bridges and
ports, but sets no addresses or shaping and keeps no journal).

Density (issue 21): beside them the kernel's own floor (namespaces, veths and addresses in `ip -batch`, no
switch), the machine's memory per emulated host (kernel included), and a sampled pingall (two peers a host):

    sudo .venv/bin/python benchmarks/setup_rate.py --hosts 10000 --switches 200 --skip-mininet --skip-bare \\
        --pingall --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulator import Emulation, load_text  # noqa: E402


def topology_text(hosts: int, switches: int, name: str) -> str:
    return (f"version: 1\nname: {name}\n"
            f"topology: {{generator: linear, switches: {switches}, hosts_per_switch: {hosts // switches}}}\n")


PING_TIMEOUT, PING_SAMPLE, PING_WAIT = 1.0, None, 10.0  # --ping-timeout, --ping-sample, --ping-wait


def available_kb() -> int:
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return int(info["MemAvailable"].split()[0])


def settle(idle: float = 0.8, longest: float = 120.0) -> None:
    """Wait until the machine is quiet: the kernel tears a namespace down after `netns del` returns, and 10,000 of
    them keep a core busy for seconds; a run started meanwhile measured the one before (up 32 s instead of 17 s)."""
    def ticks() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(values), values[3] + values[4]  # all, idle + iowait
    deadline = time.monotonic() + longest
    while time.monotonic() < deadline:
        total, quiet = ticks()
        time.sleep(1.0)
        total2, quiet2 = ticks()
        if (quiet2 - quiet) >= idle * max(total2 - total, 1):
            return


def run_cloudemu(hosts: int, switches: int, pingall: bool = False) -> tuple[float, float, dict]:
    emu = Emulation(load_text(topology_text(hosts, switches, "bench")))
    settle()
    before = available_kb()
    t0 = time.perf_counter()
    emu.up()
    up = time.perf_counter() - t0
    extra = {"memory_kb_per_host": round((before - available_kb()) / hosts, 1)}
    if pingall:
        res = emu.pingall(wait=PING_WAIT, timeout=PING_TIMEOUT, sample=PING_SAMPLE)
        extra["pingall"] = {"pairs": res.pairs, "failed": len(res.failed), "seconds": round(res.seconds, 2)}
    t0 = time.perf_counter()
    res = emu.down()
    down = time.perf_counter() - t0
    assert res.clean, res.left
    return up, down, {"phases": {k: round(v, 3) for k, v in emu.timings.items()},
                      "down_phases": {k: round(v, 3) for k, v in res.timings.items()}, **extra}




def run_kernel_floor(hosts: int, switches: int) -> tuple[float, float, dict]:
    """What the kernel itself costs: a namespace (made as emulator.runtime.namespaces makes them: `ip netns add` costs
    O(namespaces) each), a veth into it (`ip -batch`, bounded by the open-files limit as cloudemu's are) and an address
    (netlink) per host, no switch at all. The veths' other ends go where
    cloudemu's switch ends go: a namespace per private ovs-vswitchd's worth of ports (provisioners.switchd), not the
    root namespace, whose every new device the machine's own services (udev) also see."""
    from emulator.runtime import namespaces
    from emulator.runtime.executor import LocalExecutor, within_open_files
    from provisioners import nsconfig, switchd

    per_side = switchd.ports_per_instance()

    sides = [f"kf.sw{i}" for i in range((hosts + per_side - 1) // per_side)]
    names = sides + [f"kf.h{h}" for h in range(hosts)]
    links = [f"link add kf-{h} netns {sides[h // per_side]} type veth peer name eth0 netns kf.h{h}"
             for h in range(hosts)]
    addresses = [nsconfig.NamespaceConfig(f"kf.h{h}", [nsconfig.IfaceConfig(
        "eth0", f"10.{h >> 16 & 255}.{h >> 8 & 255}.{h & 255 or 1}/8")], ipv6=False) for h in range(hosts)]
    settle()
    t0 = time.perf_counter()
    namespaces.add(names, LocalExecutor().ip_batch)
    for part in within_open_files(links):
        subprocess.run(["ip", "-batch", "-"], input="\n".join(part) + "\n", text=True, check=True)
    nsconfig.configure(addresses)  # over netlink from two threads, as cloudemu configures its hosts
    up = time.perf_counter() - t0
    t0 = time.perf_counter()
    names = [f"kf.h{h}" for h in range(hosts)] + sides
    subprocess.run(["ip", "-force", "-batch", "-"], input="\n".join(f"netns del {n}" for n in names) + "\n", text=True)
    return up, time.perf_counter() - t0, {}


def run_bare(hosts: int, switches: int) -> tuple[float, float, dict]:
    """The physical floor: one ip -batch for namespaces and veths, one ovs-vsctl for bridges and ports."""
    per = hosts // switches
    br = [f"bb-s{i}" for i in range(switches)]
    lines, ports, ups = [], [], []
    for h in range(per * switches):
        s = h // per
        lines += [f"netns add bare.h{h}", f"link add bb-{h} type veth peer name eth0 netns bare.h{h}"]
        ports += ["--", "add-port", br[s], f"bb-{h}"]
        ups.append(f"link set bb-{h} up")
    bridges = []
    for b in br:
        bridges += ["--", "add-br", b, "--", "set", "bridge", b, "datapath_type=netdev"]
    links = []
    for a, b in zip(br, br[1:], strict=False):
        links.append(f"link add {a}-n type veth peer name {b}-p")
        ports += ["--", "add-port", a, f"{a}-n", "--", "add-port", b, f"{b}-p"]
        ups += [f"link set {a}-n up", f"link set {b}-p up"]
    settle()
    t0 = time.perf_counter()
    subprocess.run(["ip", "-batch", "-"], input="\n".join(lines + links) + "\n", text=True, check=True)
    subprocess.run(["ovs-vsctl", "--timeout=120", *bridges], check=True)
    subprocess.run(["ovs-vsctl", "--timeout=120", *ports], check=True)
    subprocess.run(["ip", "-batch", "-"], input="\n".join(ups) + "\n", text=True, check=True)
    up = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run(["ovs-vsctl", "--timeout=120", *[x for b in br for x in ("--", "--if-exists", "del-br", b)]], check=True)
    dels = [f"link del bb-{h}" for h in range(per * switches)] + [f"link del {a}-n" for a in br[:-1]]
    subprocess.run(["ip", "-force", "-batch", "-"], input="\n".join(dels) + "\n", text=True)
    subprocess.run(["ip", "-force", "-batch", "-"], input="\n".join(f"netns del bare.h{h}" for h in range(per * switches)) + "\n",
                   text=True)
    down = time.perf_counter() - t0
    return up, down, {}


def run_mininet(hosts: int, switches: int) -> tuple[float, float, dict]:
    """Mininet's Python API only (never `mn` or cleanup(), which kill processes by broad names)."""
    from functools import partial

    from mininet.link import Link
    from mininet.net import Mininet
    from mininet.node import OVSBridge
    from mininet.topo import LinearTopo

    topo = LinearTopo(k=switches, n=hosts // switches)
    datapath = "kernel" if Path("/sys/module/openvswitch").exists() else "user"
    settle()
    t0 = time.perf_counter()
    net = Mininet(topo=topo, switch=partial(OVSBridge, datapath=datapath), controller=None, link=Link,
                  autoSetMacs=True, build=False)
    net.build()
    net.start()
    up = time.perf_counter() - t0
    t0 = time.perf_counter()
    net.stop()
    down = time.perf_counter() - t0
    return up, down, {"datapath": datapath}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--switches", type=int, default=20)
    ap.add_argument("--skip-mininet", action="store_true")
    ap.add_argument("--skip-bare", action="store_true", help="no bare ip -batch + one ovs-vsctl loop (quadratic past "
                                                             "a few thousand ports in one daemon)")
    ap.add_argument("--pingall", action="store_true", help="time a sampled pingall after cloudemu's up")
    ap.add_argument("--runs", type=int, default=1, help="repeat, and print the median and range of each figure")
    ap.add_argument("--ping-timeout", type=float, default=1.0, help="seconds a ping waits (a first packet through "
                                                                    "100 userspace switches takes about 3 s)")
    ap.add_argument("--ping-sample", type=int, help="pairs pingall samples at most")
    ap.add_argument("--ping-wait", type=float, default=10.0, help="seconds pingall retries failed pairs for")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args()
    global PING_TIMEOUT, PING_SAMPLE, PING_WAIT
    PING_TIMEOUT, PING_SAMPLE, PING_WAIT = args.ping_timeout, args.ping_sample, args.ping_wait
    os.environ.setdefault("CLOUDEMU_STATE_DIR", tempfile.mkdtemp(prefix="cloudemu-bench-"))

    if args.runs > 1:
        return repeated(args)
    runs = {"cloudemu": run_cloudemu(args.hosts, args.switches, args.pingall),
            "kernel floor": run_kernel_floor(args.hosts, args.switches)}
    if not args.skip_bare:
        runs["bare ip -batch"] = run_bare(args.hosts, args.switches)
    if not args.skip_mininet:
        runs["mininet"] = run_mininet(args.hosts, args.switches)
    ce_up, ce_down, _ = runs["cloudemu"]
    result = {"hosts": args.hosts, "switches": args.switches,
              "runs": {k: {"up_s": round(u, 3), "down_s": round(d, 3), **extra} for k, (u, d, extra) in runs.items()},
              "ratio_vs_kernel_floor": {"up": round(ce_up / runs["kernel floor"][0], 2),
                                        "down": round(ce_down / runs["kernel floor"][1], 2)},
              "cloudemu_ms_per_host": round(ce_up / args.hosts * 1e3, 3)}
    if "bare ip -batch" in runs:
        result["ratio_vs_bare"] = {"up": round(ce_up / runs["bare ip -batch"][0], 2),
                                   "down": round(ce_down / runs["bare ip -batch"][1], 2)}
    if "mininet" in runs:
        result["speedup_vs_mininet"] = {"up": round(runs["mininet"][0] / ce_up, 1),
                                        "down": round(runs["mininet"][1] / ce_down, 1)}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.hosts} hosts on {args.switches} switches")
    print(f"{'engine':<16}{'up (s)':>10}{'down (s)':>10}{'hosts/s up':>12}")
    for name, (u, d, _) in runs.items():
        print(f"{name:<16}{u:>10.2f}{d:>10.2f}{args.hosts / u:>12.0f}")
    if "ratio_vs_bare" in result:
        print(f"cloudemu / bare: up {result['ratio_vs_bare']['up']}x, down {result['ratio_vs_bare']['down']}x "
              "(target <= 3x)")
    floor = result["ratio_vs_kernel_floor"]
    print(f"cloudemu / kernel floor: up {floor['up']}x, down {floor['down']}x; {result['cloudemu_ms_per_host']} ms "
          f"and {runs['cloudemu'][2]['memory_kb_per_host']} KB per host")
    if "speedup_vs_mininet" in result:
        s = result["speedup_vs_mininet"]
        print(f"cloudemu speed-up over Mininet: up {s['up']}x, down {s['down']}x (target >= 10x)")
    print("cloudemu phases of up:", runs["cloudemu"][2]["phases"])
    print("cloudemu phases of down:", runs["cloudemu"][2]["down_phases"])


def median_range(values: list[float]) -> str:
    """`median (lowest-highest)`, as the README gives every figure."""
    values = sorted(values)
    return f"{statistics.median(values):.3g} ({values[0]:.3g}-{values[-1]:.3g})"


def repeated(args) -> None:
    """`--runs N`: cloudemu and the kernel floor N times; the median and range of each figure."""
    rows = []
    for _ in range(args.runs):
        up, down, extra = run_cloudemu(args.hosts, args.switches, args.pingall)
        k_up, k_down, _ = run_kernel_floor(args.hosts, args.switches)
        row = {"up_s": up, "down_s": down, "ms_per_host": up / args.hosts * 1e3, "kb_per_host": extra["memory_kb_per_host"],
               "kernel_floor_up_s": k_up, "kernel_floor_down_s": k_down, "up_vs_floor": up / k_up}
        if args.pingall:
            row |= {"pingall_s": extra["pingall"]["seconds"], "pingall_failed": extra["pingall"]["failed"]}
        rows.append(row)
        print(json.dumps({k: round(v, 3) for k, v in row.items()} | {"phases": extra["phases"],
                                                                    "down_phases": extra["down_phases"]}), flush=True)

    def spread(key: str) -> str:
        return median_range([r[key] for r in rows])
    print(json.dumps({"hosts": args.hosts, "switches": args.switches, "runs": args.runs,
                      **{k: spread(k) for k in rows[0]}}, indent=1))


if __name__ == "__main__":
    main()
