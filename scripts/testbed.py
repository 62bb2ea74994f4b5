"""Emulated physical machines on this one machine, for tests and for users without a cluster.

Each machine is a network namespace on an underlay bridge, with its own sshd (key
authentication, host key written to a known_hosts file), its own Open vSwitch
(separate run and database directories), its own cloudemu state directory and its own
/run/netns (a mount namespace held by a keeper process, as a real machine has its own):
what one machine names there, another cannot see or delete. The SSH session environment
points cloudemu at those. `up` writes the cluster
inventory for them; `down` removes everything it made, ending only the processes
whose pids it recorded (and whose command line is still ours).

    scripts/testbed up 3 --out cluster.yaml
    cloudemu run topologies/fattree4.yaml --cluster cluster.yaml
    scripts/testbed down
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout
from emulator.runtime import ovsinstance  # noqa: E402

ROOT = Path(os.environ.get("CLOUDEMU_TESTBED_DIR", "/var/lib/cloudemu-testbed"))
RUN = Path(os.environ.get("CLOUDEMU_TESTBED_RUN", "/run/cloudemu-testbed"))
BRIDGE = "cetb0"
NETNS_PREFIX = "cetb-"
MARK = "cloudemu-testbed"
LXD_CLUSTER = "lxd-cluster"
LXD_PORT = 8443
#: Underlays to try, in order: benchmarking and shared ranges, unlikely to be anyone's real network.
CANDIDATES = ["198.18.0.0/24", "198.18.1.0/24", "198.19.0.0/24", "100.64.250.0/24", "10.250.250.0/24"]


def run(argv: list[str], *, check: bool = True, input: str | None = None, env: dict | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, input=input, env=env)
    if check and proc.returncode != 0:
        raise SystemExit(f"testbed: {' '.join(argv[:6])} failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
    return proc.stdout


def host_networks() -> list[ipaddress.IPv4Network]:
    nets = []
    for route in json.loads(run(["ip", "-j", "-4", "route", "show", "table", "all"]) or "[]"):
        dst = route.get("dst")
        if dst and dst not in ("default", "broadcast", "local") and not dst.startswith("127."):
            try:
                nets.append(ipaddress.ip_network(dst, strict=False))
            except ValueError:
                pass
    for link in json.loads(run(["ip", "-j", "-4", "addr"]) or "[]"):
        for a in link.get("addr_info", []):
            nets.append(ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False))
    return nets


def pick_underlay(wanted: str | None) -> ipaddress.IPv4Network:
    taken = host_networks()
    for text in [wanted] if wanted else CANDIDATES:
        net = ipaddress.ip_network(text)
        clash = [t for t in taken if t.overlaps(net) and t.prefixlen > 0]
        if not clash:
            return net
        if wanted:
            raise SystemExit(f"testbed: underlay {net} overlaps this machine's {clash[0]}; pick another --underlay")
    raise SystemExit("testbed: every candidate underlay overlaps this machine's routes; pass --underlay")


def load_state() -> dict:
    path = RUN / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_state(state: dict) -> None:
    RUN.mkdir(parents=True, exist_ok=True)
    (RUN / "state.json").write_text(json.dumps(state, indent=2))


def machine_env(name: str, engine: str | None = None) -> dict[str, str]:
    """What a session on the machine sees: its own OVS, cloudemu state and runner directories (and its LXD)."""
    env = {**ovsinstance.env(RUN / name / "ovs"), "CLOUDEMU_STATE_DIR": str(ROOT / name / "state"),
           "CLOUDEMU_MACHINE": name}
    if (engine or load_state().get("engine")) == LXD_CLUSTER:
        env.update(lxd_env(name))
    return env


def in_netns(name: str, argv: list[str]) -> list[str]:
    # nsenter keeps the host's mounts; `ip netns exec` would remount /sys
    return ["nsenter", f"--net=/run/netns/{NETNS_PREFIX}{name}", *argv]


#: The keeper: a mount namespace of the machine's own with an empty /run/netns, held open by a sleep. A fixed
#: script (no input of anyone's in it).
KEEPER = "mount -t tmpfs -o mode=0755 cetb-netns /run/netns && exec sleep infinity"


def start_keeper(name: str) -> int:
    proc = subprocess.Popen(in_netns(name, ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", KEEPER]),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    for _ in range(200):
        if proc.poll() is not None:
            raise SystemExit(f"testbed: the mount namespace of {name} did not start: {proc.stderr.read().decode()[-300:]}")
        try:
            if Path(f"/proc/{proc.pid}/cmdline").read_bytes().startswith(b"sleep\0"):
                return proc.pid
        except OSError:
            pass
        time.sleep(0.02)
    raise SystemExit(f"testbed: the mount namespace of {name} did not start")


def keeper_alive(name: str, state: dict) -> bool:
    keeper = state["machines"][name].get("keeper")
    try:
        return bool(keeper) and Path(f"/proc/{keeper}/cmdline").read_bytes() == b"sleep\0infinity\0"
    except OSError:
        return False


def alive(state: dict) -> bool:
    """Whether any daemon the testbed recorded still runs (each names the machine's directories)."""
    return any(ours(pid, markers(name)) for name, m in state.get("machines", {}).items()
               for pid in m.get("pids", {}).values())


def in_machine(name: str, argv: list[str]) -> list[str]:
    """In the machine's network and mount namespaces: what its sshd, and so every session, sees."""
    keeper = load_state()["machines"][name]["keeper"]
    return ["nsenter", f"--mount=/proc/{keeper}/ns/mnt", f"--net=/run/netns/{NETNS_PREFIX}{name}", *argv]


def machine_namespaces(name: str) -> list[str]:
    """The network namespaces named on the machine (in its own /run/netns)."""
    return run(in_machine(name, ["ls", "/run/netns"]), check=False).split()


def start_ovs(name: str) -> list[int]:
    return ovsinstance.start(RUN / name / "ovs", in_netns(name, []))


def sshd_config(name: str, address: str, key_dir: Path, engine: str) -> Path:
    d = ROOT / name
    host_key = d / "ssh_host_ed25519_key"
    if not host_key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{MARK}-{name}", "-f", str(host_key)])
    env = " ".join(f"{k}={v}" for k, v in machine_env(name, engine).items())
    config = d / "sshd_config"
    config.write_text(f"""# {MARK} machine {name}
ListenAddress {address}
Port 22
HostKey {host_key}
PidFile {RUN / name / 'sshd.pid'}
AuthorizedKeysFile {key_dir / 'authorized_keys'}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxSessions 100
MaxStartups 100:30:200
SetEnv {env}
Subsystem sftp internal-sftp
""")
    return config


def start_sshd(name: str) -> int:
    Path("/run/sshd").mkdir(exist_ok=True)
    pidfile = RUN / name / "sshd.pid"
    pidfile.unlink(missing_ok=True)
    run(in_machine(name, ["/usr/sbin/sshd", "-f", str(ROOT / name / "sshd_config")]))
    for _ in range(100):
        if pidfile.exists() and pidfile.read_text().strip():
            return int(pidfile.read_text())
        time.sleep(0.05)
    raise SystemExit(f"testbed: sshd of {name} did not start")


def bridged_traffic_filtered() -> bool:
    try:
        return Path("/proc/sys/net/bridge/bridge-nf-call-iptables").read_text().strip() == "1"
    except OSError:
        return False


def up(count: int, out: Path, underlay: str | None, engine: str) -> None:
    state = load_state()
    if state.get("machines"):
        if alive(state):
            raise SystemExit(f"testbed: already up with {len(state['machines'])} machines; 'scripts/testbed down' first")
        # recorded, but none of its processes runs: a killed run or a restarted machine
        print("testbed: clearing a testbed none of whose processes runs (left by a killed run)", file=sys.stderr)
        down()
    if shutil.which("sshd") is None and not Path("/usr/sbin/sshd").exists():
        raise SystemExit("testbed: sshd is missing: apt-get install openssh-server (scripts/setup.sh does)")
    net = pick_underlay(underlay)
    hosts = list(net.hosts())
    state = {"underlay": str(net), "bridge": BRIDGE, "machines": {}, "iptables": False, "engine": engine}
    save_state(state)  # journal first: a crash from here on is cleaned by `down`
    ROOT.mkdir(parents=True, exist_ok=True)
    key = ROOT / "id_ed25519"
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", MARK, "-f", str(key)])
    shutil.copy(f"{key}.pub", ROOT / "authorized_keys")
    run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    run(["ip", "addr", "add", f"{hosts[0]}/{net.prefixlen}", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "alias", MARK, "up"])
    if bridged_traffic_filtered():  # Docker's br_netfilter would send the bridged VXLAN through FORWARD (DROP)
        run(["iptables", "-I", "FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT", "-m", "comment", "--comment", MARK])
        state["iptables"] = True
    known = []
    python = sys.executable
    for i in range(1, count + 1):
        name, address = f"m{i}", str(hosts[i])
        state["machines"][name] = {"address": address, "pids": {}}
        save_state(state)
        (RUN / name).mkdir(parents=True, exist_ok=True)
        (ROOT / name).mkdir(parents=True, exist_ok=True)
        ns = f"{NETNS_PREFIX}{name}"
        _remove_stale_link(f"{NETNS_PREFIX}{name}")
        run(["ip", "netns", "add", ns])
        run(["ip", "link", "add", f"{NETNS_PREFIX}{name}", "type", "veth", "peer", "name", "eth0", "netns", ns])
        run(["ip", "link", "set", f"{NETNS_PREFIX}{name}", "master", BRIDGE, "alias", MARK, "up"])
        run(["ip", "-n", ns, "addr", "add", f"{address}/{net.prefixlen}", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        ovsdb, vswitchd = start_ovs(name)
        state["machines"][name]["pids"].update({"ovsdb-server": ovsdb, "ovs-vswitchd": vswitchd})
        state["machines"][name]["keeper"] = start_keeper(name)  # in its network namespace: down ends it there
        save_state(state)
        sshd_config(name, address, ROOT, engine)
        state["machines"][name]["pids"]["sshd"] = start_sshd(name)
        save_state(state)
        pub = (ROOT / name / "ssh_host_ed25519_key.pub").read_text().split()
        known.append(f"{address} {pub[0]} {pub[1]}")
    (ROOT / "known_hosts").write_text("\n".join(known) + "\n")
    if engine == LXD_CLUSTER:
        form_lxd_cluster(state)
    write_inventory(out, state, python, engine)
    print(f"testbed: {count} machines on {net} (bridge {BRIDGE}); inventory {out}")


def _remove_stale_link(dev: str) -> None:
    """The kernel tears a deleted namespace down lazily: an earlier testbed's veth end may still be there."""
    try:
        alias = Path(f"/sys/class/net/{dev}/ifalias").read_text().strip()
    except OSError:
        return
    if alias == MARK:
        run(["ip", "link", "del", dev], check=False)


def write_inventory(out: Path, state: dict, python: str, engine: str) -> None:
    cpus = os.cpu_count() or 2
    provisioner = "lxd" if engine == LXD_CLUSTER else engine
    lines = ["# written by scripts/testbed: machines emulated on this host (namespaces with their own sshd and OVS)",
             "version: 1", "name: testbed", f"known_hosts: {ROOT / 'known_hosts'}",
             f"defaults: {{user: root, key: {ROOT / 'id_ed25519'}, provisioner: {provisioner}, python: {python}, "
             f"cpu: {cpus}, max_nodes: 2000, underlay: eth0, mtu: 1500}}", "machines:"]
    lines += [f"  {name}: {{address: {m['address']}}}" for name, m in state["machines"].items()]
    if engine == LXD_CLUSTER:
        first = next(iter(state["machines"].values()))
        lines += ["# the machines are the members of this LXD cluster (one LXD daemon per machine)",
                  f"lxd: {{endpoint: 'https://{first['address']}:{LXD_PORT}', cert: {ROOT / 'lxd-client.crt'}, "
                  f"key: {ROOT / 'lxd-client.key'}, server_cert: {ROOT / 'lxd-cluster.crt'}}}"]
    out.write_text("\n".join(lines) + "\n")


# -- an LXD cluster: one daemon per machine, in the machine's network and mount namespaces --------------------------
def lxd_env(name: str) -> dict[str, str]:
    """The machine's own LXD (its directory and socket) and lxc's configuration: never the host's."""
    return {"LXD_DIR": str(ROOT / name / "lxd"), "LXD_CONF": str(ROOT / name / "lxc-conf")}


def in_lxd(name: str, argv: list[str]) -> list[str]:
    return in_machine(name, ["env", *(f"{k}={v}" for k, v in lxd_env(name).items()), *argv])


def start_lxd(name: str) -> int:
    """The machine's LXD daemon; its command line names the machine's directory (down ends it by that)."""
    lxd_dir = Path(lxd_env(name)["LXD_DIR"])
    lxd_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(in_lxd(name, ["lxd", "--group", "root", "--logfile", str(lxd_dir / "lxd.log")]),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    run(in_lxd(name, ["lxd", "waitready", "--timeout", "60"]))
    return proc.pid  # nsenter and env exec: the daemon's own pid


def form_lxd_cluster(state: dict) -> None:
    """The first machine's daemon starts the cluster, the others join it with tokens; a client certificate is
    trusted for the inventory, and the cluster's certificate kept to pin."""
    names = list(state["machines"])
    first = names[0]
    first_address = f"{state['machines'][first]['address']}:{LXD_PORT}"
    for name in names:
        m = state["machines"][name]
        m["pids"]["lxd"] = start_lxd(name)
        save_state(state)
        address = f"{m['address']}:{LXD_PORT}"
        if name == first:
            preseed = {"config": {"core.https_address": address},
                       "storage_pools": [{"name": "default", "driver": "dir"}],
                       "profiles": [{"name": "default", "devices": {"root": {"path": "/", "pool": "default",
                                                                              "type": "disk"}}}],
                       "cluster": {"server_name": name, "enabled": True}}
        else:
            token = run(in_lxd(first, ["lxc", "cluster", "add", name, "--quiet"])).strip()
            preseed = {"cluster": {"enabled": True, "server_name": name, "server_address": address,
                                   "cluster_address": first_address, "cluster_token": token,
                                   "member_config": [{"entity": "storage-pool", "name": "default", "key": "source",
                                                      "value": ""}]}}
        run(in_lxd(name, ["lxd", "init", "--preseed"]), input=json.dumps(preseed))  # JSON is YAML
    cert, key = ROOT / "lxd-client.crt", ROOT / "lxd-client.key"
    if not cert.exists():
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp384r1", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "3650", "-subj", f"/CN={MARK}"])
    run(in_lxd(first, ["lxc", "config", "trust", "add", str(cert)]))
    shutil.copy(ROOT / first / "lxd" / "cluster.crt", ROOT / "lxd-cluster.crt")
    state["lxd"] = True
    save_state(state)


def lxd_running(name: str) -> bool:
    pid = load_state()["machines"][name]["pids"].get("lxd")
    return bool(pid) and ours(pid, markers(name))


def stop_lxd(name: str) -> None:
    """The member's daemon stops (SIGTERM: LXD leaves its instances running, as on a daemon restart): to the
    cluster, the member is offline."""
    state = load_state()
    pid = state["machines"][name]["pids"].pop("lxd", None)
    if pid:
        end_process(pid, markers(name), timeout=30)
    save_state(state)


def restart_lxd(name: str, online_within: float | None = 90) -> None:
    """The member's daemon back and, unless `online_within` is None, seen online by the cluster (it marks a member
    by heartbeats, some seconds after the daemon is ready)."""
    state = load_state()
    if not lxd_running(name):
        state["machines"][name]["pids"]["lxd"] = start_lxd(name)
        save_state(state)
    if online_within is None:
        return
    deadline = time.monotonic() + online_within
    while time.monotonic() < deadline:
        listed = run(in_lxd(name, ["lxc", "cluster", "list", "--format", "csv"]), check=False)
        if any(line.split(",")[0] == name and ",ONLINE," in line for line in listed.splitlines()):
            return
        time.sleep(0.5)
    raise SystemExit(f"testbed: LXD member {name} did not come back online within {online_within:.0f} s")


def shut_lxd_cluster(state: dict) -> None:
    """Every member back up (a stopped one still holds instances), then each shut down with its instances."""
    names = [n for n in state["machines"] if (ROOT / n / "lxd").exists() and keeper_alive(n, state)]
    for name in names:  # not waiting for the cluster to see it online: it is shut down next in any case
        try:
            restart_lxd(name, online_within=None)
        except SystemExit as exc:  # it will not start: what it left is ended by pid below, and down goes on
            print(exc, file=sys.stderr)
    for name in reversed(names):
        run(in_lxd(name, ["lxd", "shutdown", "--timeout", "60"]), check=False)
    for name in names:  # a daemon that would not stop, and what it ran: ended by pid, ours by command line
        for pid in _ours_and_descendants(name):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _ours_and_descendants(name: str) -> list[int]:
    """Processes whose command line names the machine's directories (the daemon, `[lxc monitor] <dir>`) and
    their descendants (the instances' processes)."""
    parent = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                parent[int(p)] = int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found = {pid for pid in parent if pid != os.getpid() and ours(pid, markers(name))}
    grew = True
    while grew:
        more = {pid for pid, pp in parent.items() if pp in found and pid not in found}
        found |= more
        grew = bool(more)
    return sorted(found)


def markers(name: str) -> tuple[str, ...]:
    """Every process the testbed starts for a machine names one of its directories on its command line."""
    return str(ROOT / name) + "/", str(RUN / name) + "/"


def ours(pid: int, marker: tuple[str, ...]) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return any(m in cmdline for m in marker)


def end_process(pid: int, marker: tuple[str, ...], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL: only if the pid still runs a command line naming our directories."""
    if not ours(pid, marker):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and ours(pid, marker):
        time.sleep(0.05)
    if ours(pid, marker):
        os.kill(pid, signal.SIGKILL)


def processes_in(name: str) -> list[int]:
    """Every process inside the machine's network namespace: the machine's own, by construction."""
    try:
        st = os.stat(f"/run/netns/{NETNS_PREFIX}{name}")
    except OSError:
        return []
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit() and int(p) != os.getpid():
            try:
                ns = os.stat(f"/proc/{p}/ns/net")
            except OSError:
                continue
            if (ns.st_dev, ns.st_ino) == (st.st_dev, st.st_ino):
                out.append(int(p))
    return out


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def stop_ssh(name: str) -> None:
    """Take a machine off the network as far as SSH can tell: its sshd, every session and handshake it serves."""
    state = load_state()
    m = state.get("machines", {}).get(name)
    if not m:
        raise SystemExit(f"testbed: no machine {name}")
    sshd = os.path.realpath("/usr/sbin/sshd")
    _kill([p for p in processes_in(name) if _exe(p) == sshd])
    m["pids"].pop("sshd", None)
    save_state(state)


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def start_ssh(name: str) -> None:
    state = load_state()
    m = state["machines"][name]
    m["pids"]["sshd"] = start_sshd(name)
    save_state(state)


def down() -> None:
    state = load_state()
    if state.get("engine") == LXD_CLUSTER:
        shut_lxd_cluster(state)
    for name, m in state.get("machines", {}).items():
        for pid in m.get("pids", {}).values():
            end_process(pid, markers(name))
        _kill(processes_in(name))  # sessions, workers, anything started there keeps the namespace alive
        run(["ip", "netns", "del", f"{NETNS_PREFIX}{name}"], check=False)
        run(["ip", "link", "del", f"{NETNS_PREFIX}{name}"], check=False)
        shutil.rmtree(RUN / name, ignore_errors=True)
        shutil.rmtree(ROOT / name, ignore_errors=True)
    if state.get("iptables"):
        while run(["iptables", "-D", "FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT", "-m", "comment",
                   "--comment", MARK], check=False) == "" and _rule_present():
            pass
    run(["ip", "link", "del", BRIDGE], check=False)
    (ROOT / "lxd-cluster.crt").unlink(missing_ok=True)  # a new cluster has a new certificate
    (RUN / "state.json").unlink(missing_ok=True)
    print("testbed: down")


def _rule_present() -> bool:
    return MARK in run(["iptables", "-S", "FORWARD"], check=False)


def status() -> None:
    state = load_state()
    print(json.dumps(state, indent=2) if state else "testbed: not up")


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("testbed: needs root (namespaces, bridges, sshd): run it with sudo")
    p = argparse.ArgumentParser(prog="scripts/testbed", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up", help="create N machines and write their cluster inventory")
    u.add_argument("count", type=int)
    u.add_argument("--out", type=Path, default=Path("cluster.yaml"))
    u.add_argument("--underlay", help="IPv4 network for the machines (default: a free benchmarking range)")
    u.add_argument("--engine", choices=["netns", LXD_CLUSTER], default="netns",
                   help=f"the machines' default provisioner; {LXD_CLUSTER}: an LXD daemon per machine, formed into "
                        "one cluster (the inventory's lxd:, provisioner lxd)")
    sub.add_parser("down", help="remove every machine, process, device and file the testbed made")
    sub.add_parser("status", help="print the testbed's state")
    for verb in ("stop-ssh", "start-ssh", "stop-lxd", "start-lxd"):
        s = sub.add_parser(verb, help=f"{verb.split('-')[0]} one machine's {verb.split('-')[1]} daemon (to test a "
                                      "machine that drops)")
        s.add_argument("machine")
    a = p.parse_args()
    if a.cmd == "up":
        if not 1 <= a.count <= 200:
            raise SystemExit("testbed: count must be 1..200")
        up(a.count, a.out, a.underlay, a.engine)
    elif a.cmd == "down":
        down()
    elif a.cmd == "status":
        status()
    elif a.cmd == "stop-ssh":
        stop_ssh(a.machine)
    elif a.cmd == "start-ssh":
        start_ssh(a.machine)
    elif a.cmd == "stop-lxd":
        stop_lxd(a.machine)
    else:
        restart_lxd(a.machine)


if __name__ == "__main__":
    main()
