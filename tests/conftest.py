import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _ovs_running() -> bool:
    if not shutil.which("ovs-vsctl"):
        return False
    return subprocess.run(["ovs-vsctl", "--timeout=3", "show"], capture_output=True).returncode == 0


CLI = [sys.executable, "-m", "emulator"]


def cli(*args, check=True, **kw):
    """The command line as a user runs it, from the checkout."""
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=ROOT, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"cloudemu {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


NEEDS_ROOT_OVS = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces"),
    pytest.mark.skipif(not _ovs_running(), reason="needs a running Open vSwitch (scripts/setup.sh)"),
]


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    """Each test gets its own journal directory, so tests never see each other's experiments."""
    d = tmp_path / "state"
    monkeypatch.setenv("CLOUDEMU_STATE_DIR", str(d))
    return d


def leftovers(experiment: str) -> dict:
    """Everything on the machine that carries the experiment's marks: namespaces, devices, bridges, containers."""
    ns = [n for n in os.listdir("/run/netns") if n.startswith(f"ce.{experiment}.")] if Path("/run/netns").exists() else []
    devs = []
    for d in os.listdir("/sys/class/net"):
        try:
            if Path(f"/sys/class/net/{d}/ifalias").read_text().strip() == f"cloudemu-exp={experiment}":
                devs.append(d)
        except OSError:
            pass
    out = subprocess.run(["ovs-vsctl", "--format=json", "--columns=name,external_ids", "list", "Bridge"],
                         capture_output=True, text=True, check=True).stdout
    bridges = [name for name, ext in json.loads(out)["data"] if ["cloudemu-exp", experiment] in ext[1]]
    containers = []
    if shutil.which("docker"):
        proc = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=cloudemu-exp={experiment}"],
                              capture_output=True, text=True)
        containers = proc.stdout.split()
    if shutil.which("lxc"):
        proc = subprocess.run(["lxc", "query", "/1.0/instances?recursion=1"], capture_output=True, text=True)
        if proc.returncode == 0:
            containers += [i["name"] for i in json.loads(proc.stdout)
                           if i.get("config", {}).get("user.cloudemu-exp") == experiment]
    rules = []
    if shutil.which("iptables"):
        rules = [ln for ln in subprocess.run(["iptables", "-w", "-S", "FORWARD"], capture_output=True,
                                             text=True).stdout.splitlines() if f"cloudemu-exp={experiment}" in ln]
    from provisioners import portforward

    forwarders = portforward.pids_of(experiment)
    compute_dir = f"/run/cloudemu/{experiment}"
    from emulator.runtime.processes import owned_by_marker

    processes = owned_by_marker(compute_dir + "/")  # agents and OVS daemons name their directory on the command line
    found = {"forwarders": forwarders, "netns": ns, "devices": devs, "bridges": bridges, "containers": containers,
             "iptables": rules, "processes": processes, "dirs": [compute_dir] if Path(compute_dir).exists() else []}
    return {k: v for k, v in found.items() if v}


def shaped_rate(emu, client: str, server: str, expected: float, tries: int = 4) -> float:
    """The best of up to `tries` iperf3 runs, as a fraction-free figure comparable with `expected` (the
    link's shaped rate): the TCP goodput measured, scaled back to the frames HTB shapes.

    A shaper caps the rate, so the best run shows the cap. On two cores a busy neighbour (userspace OVS,
    a container still being removed) can drag one run below the cap; it can never push one above, so the
    upper bound stays strict. Slow start is left out of each run (iperf3 -O 1).
    """
    from emulator.checks import iperf, tcp_goodput

    best = 0.0
    for _ in range(tries):
        quiet_cpu()
        best = max(best, iperf(emu, client, server, seconds=3) * expected / tcp_goodput(expected))
        if best >= 0.95 * expected:
            break
    return best


def quiet_cpu(limit: float = 60.0, idle: float = 0.5) -> None:
    """Wait (at most `limit` s) until the machine's cores are at least `idle` idle over half a second: on two
    cores another program's burst (a CI step, a test beside it) would be measured instead of the link."""
    import time

    def ticks() -> tuple[int, int]:
        values = [int(v) for v in open("/proc/stat").readline().split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, all

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        idle0, total0 = ticks()
        time.sleep(0.5)
        idle1, total1 = ticks()
        if (idle1 - idle0) >= idle * max(1, total1 - total0):
            return


def http_text_when_up(url: str, tries: int = 100) -> str:
    """The body at `url` once something answers there (a server just started needs a moment); "" if never."""
    import time
    import urllib.request

    for _ in range(tries):
        try:
            return urllib.request.urlopen(url, timeout=5).read().decode()
        except OSError:
            time.sleep(0.1)
    return ""
