"""Engines side by side: N hosts on one OVS switch with cloudemu netns and cloudemu docker, beside a bare
Docker SDK loop that creates the same containers (same image, same 8 threads, network none) without wiring.

    sudo .venv/bin/python benchmarks/engines.py --nodes 100

and a bare `lxc launch` loop for LXD (same image, init and threads).

Targets (issue 4): cloudemu within 1.2x of the bare loop on Docker and LXD, netns at least 10x faster than both.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulator import Emulation, load_text  # noqa: E402
from emulator.compiler.plan import DEFAULT_IMAGE  # noqa: E402
from provisioners.deployer import THREADS  # noqa: E402


def topology(nodes: int, engine: str) -> str:
    return (f"version: 1\nname: bench_{engine}\ndefaults: {{provisioner: {engine}, subnet: 10.90.0.0/16}}\n"
            f"topology: {{generator: linear, switches: 1, hosts_per_switch: {nodes}}}\n")


def run_cloudemu(nodes: int, engine: str) -> dict:
    emu = Emulation(load_text(topology(nodes, engine)))
    t0 = time.perf_counter()
    emu.up()
    up = time.perf_counter() - t0
    first, last = emu.hosts()[0], emu.hosts()[-1]
    reach = first.run(["ping", "-c1", "-W2", last.ip]).returncode == 0
    t0 = time.perf_counter()
    result = emu.down()
    down = time.perf_counter() - t0
    assert result.clean, result.left
    return {"up": up, "down": down, "first_to_last_ping": reach}


def run_bare_docker(nodes: int) -> dict:
    import docker

    client = docker.from_env()
    names = [f"bare-bench-{i}" for i in range(nodes)]

    def start(name: str):
        return client.containers.run(DEFAULT_IMAGE, ["sleep", "infinity"], name=name, detach=True,
                                     network_mode="none", init=True, cap_add=["NET_ADMIN", "NET_RAW"],
                                     labels={"bare-bench": "1"})

    t0 = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        containers = list(pool.map(start, names))
    up = time.perf_counter() - t0
    t0 = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda c: c.remove(force=True), containers))
    down = time.perf_counter() - t0
    return {"up": up, "down": down}


def run_bare_lxd(nodes: int) -> dict:
    """`lxc launch` of the same image with the same init and no network, in the same threads; then delete."""
    import subprocess

    from provisioners.images import lxd_alias

    names = [f"bare-bench-{i}" for i in range(nodes)]

    def launch(name: str) -> None:
        subprocess.run(["lxc", "launch", lxd_alias(DEFAULT_IMAGE), name, "-c", "raw.lxc=lxc.init.cmd = /bin/sleep infinity"],
                       check=True, capture_output=True)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(launch, names))
    up = time.perf_counter() - t0
    t0 = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda n: subprocess.run(["lxc", "delete", "-f", n], check=True, capture_output=True), names))
    return {"up": up, "down": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (namespaces, OVS, Docker)")
    with tempfile.TemporaryDirectory() as state:
        os.environ["CLOUDEMU_STATE_DIR"] = state
        rows = {"cloudemu netns": run_cloudemu(args.nodes, "netns"),
                "cloudemu docker": run_cloudemu(args.nodes, "docker"),
                "bare docker SDK loop": run_bare_docker(args.nodes),
                "cloudemu lxd": run_cloudemu(args.nodes, "lxd"),
                "bare lxc launch loop": run_bare_lxd(args.nodes)}
    ratios = {"docker_over_bare_up": rows["cloudemu docker"]["up"] / rows["bare docker SDK loop"]["up"],
              "docker_over_bare_down": rows["cloudemu docker"]["down"] / rows["bare docker SDK loop"]["down"],
              "docker_over_netns_up": rows["cloudemu docker"]["up"] / rows["cloudemu netns"]["up"],
              "docker_over_netns_down": rows["cloudemu docker"]["down"] / rows["cloudemu netns"]["down"],
              "lxd_over_bare_up": rows["cloudemu lxd"]["up"] / rows["bare lxc launch loop"]["up"],
              "lxd_over_bare_down": rows["cloudemu lxd"]["down"] / rows["bare lxc launch loop"]["down"],
              "lxd_over_netns_up": rows["cloudemu lxd"]["up"] / rows["cloudemu netns"]["up"]}
    if args.json:
        print(json.dumps({"nodes": args.nodes, "runs": rows, "ratios": ratios}, indent=2))
        return
    print(f"{args.nodes} hosts on one OVS switch")
    print(f"{'engine':<22} {'up s':>7} {'down s':>7} {'nodes/s up':>10}")
    for name, r in rows.items():
        print(f"{name:<22} {r['up']:>7.2f} {r['down']:>7.2f} {args.nodes / r['up']:>10.1f}")
    print(f"cloudemu docker / bare docker: up {ratios['docker_over_bare_up']:.2f}x, "
          f"down {ratios['docker_over_bare_down']:.2f}x (target <= 1.2x)")
    print(f"cloudemu lxd / bare lxc: up {ratios['lxd_over_bare_up']:.2f}x, "
          f"down {ratios['lxd_over_bare_down']:.2f}x (target <= 1.2x)")
    print(f"docker / netns: up {ratios['docker_over_netns_up']:.1f}x, down {ratios['docker_over_netns_down']:.1f}x; "
          f"lxd / netns: up {ratios['lxd_over_netns_up']:.1f}x (target: netns >= 10x faster)")


if __name__ == "__main__":
    main()
