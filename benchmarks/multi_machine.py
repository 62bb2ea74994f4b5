"""The same topology on 1 and on 3 testbed machines (scripts/testbed), side by side in one run.

    sudo .venv/bin/python benchmarks/multi_machine.py --hosts 100 300
    sudo .venv/bin/python benchmarks/multi_machine.py --lxd --runs 3

For each host count and machine count: time per phase of `up` and `down`, SSH round
trips per machine, a cross-machine ping, and the same topology brought up locally
(no SSH) as the floor. Target (issue 5): round trips per machine constant, whatever
the node count.

With --lxd: a fat-tree of LXD hosts on this machine's LXD, on three SSH machines, and on the three members of
an LXD cluster (scripts/testbed --engine lxd-cluster), with the LXD API requests each machine's worker made.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from emulator import Emulation, load_text  # noqa: E402
from emulator.topology.cluster import load_cluster  # noqa: E402


def topology(name: str, hosts: int) -> str:
    leaves = max(1, hosts // 30)
    return (f"version: 1\nname: {name}\ndefaults: {{subnet: 10.91.0.0/16}}\n"
            f"topology: {{generator: leafspine, spines: 2, leaves: {leaves}, hosts_per_leaf: {hosts // leaves}}}\n")


def subset(cluster_file: Path, count: int, out: Path) -> Path:
    lines = cluster_file.read_text().splitlines()
    head = lines[: lines.index("machines:") + 1]
    machines = [ln for ln in lines[len(head):] if ln.strip()][:count]
    out.write_text("\n".join(head + machines) + "\n")
    return out


def lxd_topology(name: str, hosts: int) -> str:
    """The LXD comparison's topology: a fat-tree k=4 (16 LXD hosts, 20 OVS switches), as the integration test's."""
    return (f"version: 1\nname: {name}\ndefaults: {{subnet: 10.92.0.0/24, provisioner: lxd}}\n"
            "topology: {generator: fattree, k: 4}\n")


def measure(hosts: int, cluster_path: Path | None, make=topology, where: str = "testbed") -> dict:
    name = f"bench_mm_{hosts}_{'local' if cluster_path is None else cluster_path.stem}"
    cluster = load_cluster(cluster_path) if cluster_path else None
    emu = Emulation(load_text(make(name, hosts)), cluster=cluster)
    t0 = time.perf_counter()
    emu.up()
    up = time.perf_counter() - t0
    hs = emu.hosts()
    a = hs[0]
    b = next((h for h in hs if h.plan_node.machine != a.plan_node.machine), hs[-1])
    deadline = time.monotonic() + 40  # spanning tree converges first (the leaf-spine has loops)
    while not (reach := a.run(["ping", "-c1", "-W1", b.ip]).returncode == 0) and time.monotonic() < deadline:
        time.sleep(0.5)
    t1 = time.perf_counter()
    res = emu.down()
    down = time.perf_counter() - t1
    row = {"hosts": hosts, "machines": 1 if cluster is None else len(cluster.machines),
           "where": "local" if cluster is None else where, "up_s": round(up, 2), "down_s": round(down, 2),
           "phases": {k: round(v, 2) for k, v in emu.timings.items()}, "ping_across": reach, "clean": res.clean}
    if emu.deployment:
        row["round_trips"] = emu.deployment.round_trips
        row["tunnels"] = len(emu.plan.tunnels)
        row["machine_phases"] = {m: round(sum(t.values()), 2) for m, t in emu.deployment.machine_timings.items()}
        row["lxd_requests"] = emu.deployment.lxd_requests
    return row


def lxd_rows(runs: int, tmp: Path) -> list[dict]:
    """The same LXD fat-tree three ways: this machine's own LXD (no SSH, the floor); three SSH machines each making
    its hosts through a stand-alone LXD (on the testbed they share this host's daemon); and three machines that are
    the members of one LXD cluster, hosts made through the cluster's API with a target."""
    rows = []
    for run in range(runs):
        rows.append({**measure(16, None, lxd_topology), "run": run})
        print(json.dumps(rows[-1]), file=sys.stderr)
    for engine, where in (("netns", "ssh+lxd"), ("lxd-cluster", "lxd-cluster")):
        inventory = tmp / f"{engine}.yaml"
        subprocess.run([str(HERE / "scripts" / "testbed"), "up", "3", "--engine", engine, "--out", str(inventory)],
                       check=True)
        try:
            if engine == "netns":  # the machines' workers make LXD hosts: through this host's daemon
                inventory.write_text(inventory.read_text().replace("provisioner: netns", "provisioner: lxd"))
            else:
                subprocess.run([str(HERE / ".venv/bin/cloudemu"), "image", "build", "--engine", "lxd", "--cluster",
                                str(inventory)], check=True, capture_output=True)
            for run in range(runs):
                rows.append({**measure(16, inventory, lxd_topology, where), "run": run})
                print(json.dumps(rows[-1]), file=sys.stderr)
        finally:
            subprocess.run([str(HERE / "scripts" / "testbed"), "down"], check=True)
    return rows


def print_lxd(rows: list[dict]) -> None:
    import statistics

    print(f"{'where':>12} {'runs':>4} {'up s (median, range)':>22} {'down s (median, range)':>24} "
          f"{'SSH RT/machine':>14} {'LXD API requests/machine':>24}")
    medians = {}
    for where in ("local", "ssh+lxd", "lxd-cluster"):
        mine = [r for r in rows if r["where"] == where]
        if not mine:
            continue
        ups, downs = [r["up_s"] for r in mine], [r["down_s"] for r in mine]
        medians[where] = statistics.median(ups)
        rt = max(max(r["round_trips"].values()) for r in mine) if mine[0].get("round_trips") else "-"
        api = sorted({v for r in mine for v in r.get("lxd_requests", {}).values()})
        print(f"{where:>12} {len(mine):>4} {statistics.median(ups):>8.2f} ({min(ups):.2f}-{max(ups):.2f})"
              f"{statistics.median(downs):>12.2f} ({min(downs):.2f}-{max(downs):.2f}) {rt!s:>14} "
              f"{(f'{api[0]}-{api[-1]}' if api else '-'):>24}"
              + ("" if all(r["ping_across"] and r["clean"] for r in mine) else "  FAILED ping or clean"))
    if "lxd-cluster" in medians and "ssh+lxd" in medians:
        print(f"lxd-cluster / ssh+lxd up: {medians['lxd-cluster'] / medians['ssh+lxd']:.2f}x; "
              f"lxd-cluster / local up: {medians['lxd-cluster'] / medians['local']:.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hosts", type=int, nargs="+", default=[100, 300])
    p.add_argument("--json", action="store_true")
    p.add_argument("--lxd", action="store_true",
                   help="instead: a fat-tree of LXD hosts locally, on SSH machines, and on a 3-member LXD cluster")
    p.add_argument("--runs", type=int, default=3, help="with --lxd: runs of each")
    a = p.parse_args()
    spec = importlib.util.spec_from_file_location("testbed", HERE / "scripts" / "testbed.py")
    testbed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(testbed)
    if testbed.load_state().get("machines"):
        sys.exit("a testbed is already up: 'scripts/testbed down' first")
    rows = []
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as state:
        import os

        os.environ["CLOUDEMU_STATE_DIR"] = state
        if a.lxd:
            rows = lxd_rows(a.runs, Path(tmp))
            print(json.dumps(rows, indent=2)) if a.json else print_lxd(rows)
            return
        cluster3 = Path(tmp) / "three.yaml"
        subprocess.run([str(HERE / "scripts" / "testbed"), "up", "3", "--out", str(cluster3)], check=True)
        try:
            one = subset(cluster3, 1, Path(tmp) / "one.yaml")
            for hosts in a.hosts:
                for cluster_path in (None, one, cluster3):
                    rows.append(measure(hosts, cluster_path))
                    print(json.dumps(rows[-1]), file=sys.stderr)
        finally:
            subprocess.run([str(HERE / "scripts" / "testbed"), "down"], check=True)
    if a.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'hosts':>5} {'where':>8} {'mach':>4} {'up s':>6} {'down s':>6} {'tunnels':>7} {'max RT/machine':>14} ping")
    for r in rows:
        rt = max(r["round_trips"].values()) if r.get("round_trips") else "-"
        print(f"{r['hosts']:>5} {r['where']:>8} {r['machines']:>4} {r['up_s']:>6} {r['down_s']:>6} "
              f"{r.get('tunnels', '-'):>7} {rt:>14} {'ok' if r['ping_across'] else 'FAIL'}")
    by = {(r["hosts"], r["where"], r["machines"]): r for r in rows}
    for hosts in a.hosts:
        local, one, three = by[(hosts, "local", 1)], by[(hosts, "testbed", 1)], by[(hosts, "testbed", 3)]
        print(f"{hosts} hosts: 1 testbed machine / local up {one['up_s'] / local['up_s']:.2f}x; "
              f"3 machines / 1 machine up {three['up_s'] / one['up_s']:.2f}x, down {three['down_s'] / one['down_s']:.2f}x")
    trips = {r["hosts"]: max(r["round_trips"].values()) for r in rows if r.get("round_trips") and r["machines"] == 3}
    print(f"round trips per machine (3 machines) by host count: {trips} "
          f"({'constant' if len(set(trips.values())) == 1 else 'NOT constant'})")


if __name__ == "__main__":
    main()
