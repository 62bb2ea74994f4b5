"""A link made by LXD (a `p2p` NIC hot-added through the API) against the veth cloudemu makes (one `ip -batch`
for all of a machine's links), into the same running LXD instance on this machine's LXD.

    sudo .venv/bin/python benchmarks/lxd_links.py --links 10 --runs 3

Why the LXD cluster mode keeps its wiring in cloudemu's worker: see the README's "Running on an LXD cluster".
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

INSTANCE = "cebench-links"


def one_run(client, links: int) -> tuple[float, float]:
    """Seconds per link: LXD's p2p NIC, then cloudemu's way (a veth pair per link, its far end in the instance)."""
    instance = client.instances.create({"name": INSTANCE, "source": {"type": "image", "alias": "cloudemu/node-1"},
                                        "config": {"raw.lxc": "lxc.init.cmd = /bin/sleep infinity"}}, wait=True)
    try:
        instance.start(wait=True)
        pid = instance.state().pid
        t0 = time.perf_counter()
        for i in range(links):
            instance.devices[f"p{i}"] = {"type": "nic", "nictype": "p2p", "name": f"p{i}", "host_name": f"cebp{i}"}
            instance.save(wait=True)
        p2p = (time.perf_counter() - t0) / links
        batch = "".join(f"link add cebv{i} type veth peer name v{i} netns {pid}\n" for i in range(links))
        t1 = time.perf_counter()
        subprocess.run(["ip", "-batch", "-"], input=batch, text=True, check=True)
        veth = (time.perf_counter() - t1) / links
        return p2p, veth
    finally:
        for i in range(links):
            subprocess.run(["ip", "link", "del", f"cebv{i}"], capture_output=True)
        instance.stop(force=True, wait=True)
        instance.delete(wait=True)


def main() -> None:
    import pylxd

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--links", type=int, default=10)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    client = pylxd.Client()
    if client.instances.exists(INSTANCE):
        raise SystemExit(f"an instance {INSTANCE} exists already: 'lxc delete --force {INSTANCE}' if it is a leftover")
    runs = [one_run(client, a.links) for _ in range(a.runs)]
    p2p, veth = [r[0] * 1e3 for r in runs], [r[1] * 1e3 for r in runs]
    print(f"LXD p2p NIC (API, one per request): {statistics.median(p2p):.1f} ms per link ({min(p2p):.1f}-{max(p2p):.1f})")
    print(f"cloudemu veth (one ip -batch):       {statistics.median(veth):.2f} ms per link ({min(veth):.2f}-{max(veth):.2f})")
    print(f"ratio: {statistics.median(p2p) / statistics.median(veth):.0f}x")


if __name__ == "__main__":
    main()
