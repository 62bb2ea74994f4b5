"""The fabric: everything of a plan that is not a host's own process. Every host is a named network
namespace (a plain one on the netns engine, a container's attached one on the others); switches are OVS
bridges (the machine's or the experiment's own ovs-vswitchd), bridges Linux bridges, links veth pairs and
VXLAN devices, with shaping, published ports, namespace configuration and marker-based removal.

Work is batched: one `ip -batch` per phase, one ovs-vsctl transaction for all
bridges and one for all ports, one thread for all namespace configuration.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from emulator.compiler.plan import MARKER_KEY, NETNS_PREFIX, Plan, PlanNode, marker
from emulator.runtime import ovsinstance, processes
from emulator.runtime.events import Phases
from emulator.runtime.executor import LocalExecutor
from emulator.runtime.journal import Journal, Resource
from provisioners import batches, computenodes, devices, firewall, nsconfig, portforward, switchd
from provisioners.base import NodeState, unchecked

NETNS_DIR = Path("/run/netns")
OVS_UNASKED = "the machine's ovs-vswitchd does not answer; start it and run down again"


class Fabric:
    """Built by the Deployer around its engines' hosts (provisioners.deployer); knows no engine and no kind."""

    def __init__(self, executor: LocalExecutor | None = None):
        self.ex = executor or LocalExecutor()

    # -- what will exist -------------------------------------------------
    def resources(self, plan: Plan) -> list[Resource]:
        plan = self.placed(plan)
        out = [r for ovs in self.instances(plan)
               for r in (Resource("netns", switchd.namespace_of(ovs)), Resource("ovs-instance", str(ovs)))]
        out += [Resource("netns", n.netns) for n in plan.nodes if n.kind == "host"]
        out += [Resource("linux-bridge", n.device) for n in plan.nodes if n.kind == "bridge"]
        out += [Resource("ovs-bridge", n.device) for n in plan.nodes if n.kind == "switch"]
        out += [batches.veth_resource(link) for link in batches.veths(plan.links)]
        out += [batches.tunnel_resource(t) for t in plan.tunnels]
        out += [Resource("port", f"{outer}", n.netns) for n in plan.nodes for outer, *_ in n.options.get("ports", ())]
        if any(n.options.get("ports") for n in plan.nodes):
            out.append(Resource("dir", str(portforward.log_dir(plan.experiment))))
        return out

    # -- preflight -------------------------------------------------------
    def problems(self, plan: Plan) -> list[str]:
        """What stops this machine from building the plan's fabric (raises nothing, creates nothing)."""
        plan = self.placed(plan)
        problems: list[str] = []
        if os.geteuid() != 0:
            problems.append("cloudemu's netns engine needs root (network namespaces, veth, OVS): run it with sudo")
        for tool, pkg in (("ip", "iproute2"), ("tc", "iproute2")):
            if not self.ex.which(tool):
                problems.append(f"{tool} is missing: apt-get install {pkg}")
        if any(n.kind == "switch" for n in plan.nodes):
            problems += self._ovs_problems(plan)
        if any(batches.needs_netem(link) for link in plan.links) and not self.netem_available():
            bad = next(link for link in plan.links if batches.needs_netem(link))
            problems.append(
                f"link {bad.a.node}-{bad.b.node} asks for delay/jitter/loss, but this kernel has no netem "
                "(sch_netem); remove those parameters or run on a machine whose kernel has netem")
        problems += self._collisions(plan)
        problems += _port_problems(plan)
        problems += _neighbour_table_problems(sum(n.kind == "host" for n in plan.nodes))
        return problems

    def switch_instances(self, plan: Plan) -> dict[str, Path]:
        """Switch name -> the private OVS that holds it, when the experiment's switches get their own (see
        provisioners.switchd); empty when they go to the machine's OVS."""
        switches = [n for n in plan.nodes if n.kind == "switch"]
        controllers = any(n.options.get("controller") for n in switches)
        if not switches or not switchd.private(self.kernel_datapath(), controllers):
            return {}
        ports = dict.fromkeys((n.name for n in switches), 0)
        for end in [e for link in plan.links for e in (link.a, link.b)] + [t.end for t in plan.tunnels]:
            if end.node in ports:
                ports[end.node] += 1
        return {name: switchd.base_for(plan.experiment, plan.machine, i)
                for i, group in enumerate(switchd.shards(ports, switchd.ports_per_instance())) for name in group}

    def instances(self, plan: Plan) -> list[Path]:
        return sorted(set(self.switch_instances(plan).values()))

    def placed(self, plan: Plan) -> Plan:
        """The plan as this machine builds it: with private OVS instances, a switch's link ends live in the namespace
        of the one that holds it."""
        where = self.switch_instances(plan)
        if where:
            plan = batches.ends_of_switches_in(plan, {s: switchd.namespace_of(b) for s, b in where.items()})
        return batches.patched(plan, where) if switchd.patch_links() else plan

    def _ovs_problems(self, plan: Plan) -> list[str]:
        private = bool(self.switch_instances(plan))
        tools = ["ovs-vsctl", "ovsdb-server", "ovs-vswitchd", "ovsdb-tool"] if private else ["ovs-vsctl"]
        if not all(self.ex.which(t) for t in tools):
            return ["Open vSwitch is missing: apt-get install openvswitch-switch (or run scripts/setup.sh)"]
        if not private and self.ex.run(["ovs-vsctl", "--timeout=5", "show"], check=False).returncode != 0:
            return ["Open vSwitch is not running: start it with "
                    "/usr/share/openvswitch/scripts/ovs-ctl --system-id=random start (or run scripts/setup.sh)"]
        if not self.kernel_datapath() and any(
                n.options.get("datapath") == "kernel" for n in plan.nodes if n.kind == "switch"):
            return ["a switch asks for datapath: kernel, but the openvswitch kernel module is not loaded; "
                    "use datapath: user or auto"]
        return []

    def _collisions(self, plan: Plan) -> list[str]:
        """A planned name that already exists belongs to someone else: refuse rather than touch it."""
        existing_ns = set(os.listdir(NETNS_DIR)) if NETNS_DIR.exists() else set()
        existing_dev = devices.names()
        clash = [n.netns for n in plan.nodes if n.netns and n.netns in existing_ns]
        clash += [ns for ns in map(switchd.namespace_of, self.instances(plan)) if ns in existing_ns]
        clash += [n.device for n in plan.nodes if n.device and n.device in existing_dev]
        clash += [e.dev for link in batches.veths(plan.links) for e in (link.a, link.b)
                  if e.netns is None and e.dev in existing_dev]
        clash += [batches.tunnel_resource(t).name for t in plan.tunnels if t.end.netns is None and t.end.dev in existing_dev]
        clash += [t.create_as for t in plan.tunnels if t.create_as and t.create_as in existing_dev]
        problems = []
        if plan.tunnels:
            taken = devices.vxlan_ids()
            used = [t for t in plan.tunnels if t.vni in taken]
            if used:
                problems.append(f"VXLAN id {used[0].vni} is already used here by device {taken[used[0].vni]} "
                                f"({len(used)} of this plan's ids are); 'cloudemu down' the experiment that owns it")
        if clash:
            shown = ", ".join(clash[:5]) + (f" and {len(clash) - 5} more" if len(clash) > 5 else "")
            problems.append(f"{shown} already exist(s) on this machine; if left by an earlier run, "
                            f"'cloudemu down {plan.experiment}' removes it, otherwise pick another --name")
        return problems

    def kernel_datapath(self) -> bool:
        return Path("/sys/module/openvswitch").exists()

    def netem_available(self) -> bool:
        """Ask the kernel: add a netem qdisc in a throwaway namespace."""
        if Path("/sys/module/sch_netem").exists():
            return True
        # an unnamed namespace that ends with the probe: nothing to remove, nothing left if we are killed
        return self.ex.run(["unshare", "--net", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
                           check=False).returncode == 0

    # -- create ----------------------------------------------------------
    def create(self, plan: Plan, journal: Journal, phases: Phases, make_hosts: Callable) -> None:
        """Everything but the hosts' own processes; `make_hosts(plan, hosts, journal, advance)` makes each host's
        namespace (by its engine) while OVS starts. The journal holds the plan's resources already."""
        plan = self.placed(plan)
        where = self.switch_instances(plan)
        instances = sorted(set(where.values()))
        switch_namespaces = [switchd.namespace_of(b) for b in instances]

        def db_of(switch: str) -> str | None:  # None: the machine's OVS
            return ovsinstance.db(where[switch]) if where else None
        hosts = [n for n in plan.nodes if n.kind == "host"]
        switches = [n for n in plan.nodes if n.kind == "switch"]
        bridges = [n for n in plan.nodes if n.kind == "bridge"]
        mark = marker(plan.experiment)
        userspace = not self.kernel_datapath()

        # OVS works in its own process: it starts while the namespaces are made, and takes its
        # ports while the namespaces are configured.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ovs") as background:
            with phases.phase("namespaces", total=len(hosts)) as step:
                if instances:  # IPv6 off before any port arrives: bridge ports need no addresses
                    self.ex.netns_add(switch_namespaces)
                    journal.mark([Resource("netns", ns) for ns in switch_namespaces], "created")
                    nsconfig.configure([nsconfig.NamespaceConfig(ns, ipv6_later=False) for ns in switch_namespaces])
                making_switches = background.submit(self._make_switches, plan, switches, where, userspace)
                make_hosts(plan, hosts, journal, step.advance)

            with phases.phase("switches", total=len(switches) + len(bridges)) as step:
                self._make_linux_bridges(plan, bridges, journal, mark)
                making_switches.result()
                journal.mark([Resource("ovs-instance", str(b)) for b in instances], "created")
                journal.mark([Resource("ovs-bridge", s.device) for s in switches], "created")
                step.advance(len(switches) + len(bridges))

            with phases.phase("links", total=len(plan.links)) as step:
                self.ex.ip_batch(batches.veth_lines(plan.links, mark))
                kinds = {n.name: n for n in plan.nodes}
                ports: dict[str | None, list] = {}  # per OVS database
                bridge_ports = []
                for link in plan.links:
                    for end, peer in ((link.a, link.b), (link.b, link.a)):
                        owner = kinds[end.node]
                        if link.kind == "patch":
                            ports.setdefault(db_of(owner.name), []).extend(
                                batches.ovs_patch_port(owner.device, end, peer, plan.experiment))
                        elif owner.kind == "switch":
                            ports.setdefault(db_of(owner.name), []).append(
                                batches.ovs_port(owner.device, end.dev, plan.experiment))
                        elif owner.kind == "bridge":
                            bridge_ports.append(f"link set dev {end.dev} master {owner.device}")
                self.ex.ip_batch(bridge_ports)
                journal.mark([batches.veth_resource(link) for link in batches.veths(plan.links)], "created")
                step.advance(len(plan.links))

            # Ports join while the switches' side of every link is still down, so ovs-vswitchd sees no
            # link event meanwhile (each makes it reconfigure every port) and hosts are configured at
            # the same time; the switches' side comes up last, in one netlink batch.
            adding_ports = background.submit(self._add_ports, ports)

            if plan.tunnels:
                with phases.phase("tunnels", total=len(plan.tunnels)) as step:
                    self.make_tunnels(plan, mark, db_of)
                    journal.mark([batches.tunnel_resource(t) for t in plan.tunnels], "created")
                    step.advance(len(plan.tunnels))

            configs = batches.namespace_configs(plan, tx_csum_off=userspace and bool(switches))
            switch_side = [c for c in configs if c.netns in switch_namespaces]
            with phases.phase("configure", total=len(hosts)) as step:
                self.ex.tc_batch(batches.root_shaping([*plan.links, *plan.tunnels]))
                nsconfig.configure([c for c in configs if c not in switch_side], step.advance)
                self._apply_netem(plan)

            with phases.phase("switch ports", total=sum(map(len, ports.values()))) as step:
                adding_ports.result()
                nsconfig.configure(switch_side)
                self._start_switches(instances)
                step.advance(sum(map(len, ports.values())))

        published = [(n, port) for n in hosts for port in n.options.get("ports", ())]
        if published:
            with phases.phase("ports", total=len(published)) as step:
                for node, (outer, inner, *host) in published:
                    portforward.start(plan.experiment, node.netns, outer, inner, *host)
                    journal.mark([Resource("port", f"{outer}", node.netns)], "created")
                    step.advance(1)

    def _make_switches(self, plan: Plan, switches: list[PlanNode], where: dict[str, Path], userspace: bool) -> None:
        """The switches' bridges, one transaction per OVS. A private instance's database starts alone and takes its
        whole configuration (bridges here, ports later) before its ovs-vswitchd starts (_start_switches): the
        daemon then opens every port once, where it reconfigures every port it has for each port added or link
        coming up while it runs (5,000 ports in one daemon: 34 s)."""
        hosts = sum(n.kind == "host" for n in plan.nodes)

        def one(base: Path | None, members: list[PlanNode]) -> None:  # None: the machine's OVS
            if base is not None:
                ovsinstance.start(base, self._in_namespace(base), switch=False)
            self.ex.ovs_vsctl([cmd for s in members
                               for cmd in batches.ovs_bridge_commands(s, plan.experiment, userspace, hosts)],
                              db=ovsinstance.db(base) if base else None, wait=base is None)
        by_base: dict[Path | None, list[PlanNode]] = {}
        for s in switches:
            by_base.setdefault(where.get(s.name), []).append(s)
        _side_by_side(one, by_base)

    def _add_ports(self, ports: dict[str | None, list]) -> None:
        """Each instance's ports in one transaction of its own, instances side by side (into a private instance's
        database before its daemon runs)."""
        _side_by_side(lambda db, commands: self.ex.ovs_vsctl(commands, db=db, wait=db is None), ports)

    def _start_switches(self, instances: list[Path]) -> None:
        """Each private instance's ovs-vswitchd, its links up already; done once it has applied its configuration (a
        transaction that waits for it)."""
        def one(base: Path, _) -> None:
            ovsinstance.start_switch(base, self._in_namespace(base))
            self.ex.ovs_vsctl([["set", "Open_vSwitch", ".", "external_ids:cloudemu-ready=true"]], db=ovsinstance.db(base),
                              timeout=600)
        _side_by_side(one, dict.fromkeys(instances))

    @staticmethod
    def _in_namespace(base: Path) -> list[str]:
        return ["nsenter", f"--net={NETNS_DIR / switchd.namespace_of(base)}"]

    def _make_linux_bridges(self, plan: Plan, bridges: list[PlanNode], journal: Journal, mark: str) -> None:
        lines = []
        for b in bridges:
            lines += [f"link add {b.device} type bridge stp_state {int(b.options.get('stp', False))}",
                      f"link set dev {b.device} alias {mark} up"]
        self.ex.ip_batch(lines)
        if bridges and firewall.bridged_traffic_filtered():
            journal.plan([Resource("iptables", b.device) for b in bridges])
            for b in bridges:
                firewall.accept_bridge(self.ex, b.device, plan.experiment)
            journal.mark([Resource("iptables", b.device) for b in bridges], "created")
        journal.mark([Resource("linux-bridge", b.device) for b in bridges], "created")

    def make_tunnels(self, plan: Plan, mark: str, db_of) -> None:
        """Links cut by placement: a Linux VXLAN device per end, bound to the underlay address.

        A switch end is that device as an OVS port (it works on the userspace datapath,
        where an OVS vxlan port would need the underlay on an OVS bridge); a host end is
        made in the root namespace, then moved into the host's and renamed: its UDP
        socket stays on the underlay."""
        nodes = {n.name: n for n in plan.nodes}
        lines, ports = [], {}
        for t in plan.tunnels:
            dev = t.create_as or t.end.dev
            lines += [f"link add {dev} type vxlan id {t.vni} remote {t.remote_ip} local {t.local_ip} dstport {t.port}",
                      f"link set dev {dev} alias {mark} mtu {t.mtu}"]
            owner = nodes[t.end.node]
            if t.end.netns:  # a host's, or the switches' namespace (brought up there with the rest)
                lines.append(f"link set dev {dev} netns {t.end.netns} name {t.end.dev}"
                             + (f" address {t.end.mac}" if t.end.mac else ""))
            else:
                lines.append(f"link set dev {dev} up")
            if t.realize == "bridge":
                lines.append(f"link set dev {dev} master {owner.device}")
            elif t.realize == "ovs":
                ports.setdefault(db_of(owner.name), []).append(batches.ovs_port(owner.device, t.end.dev, plan.experiment))
        self.ex.ip_batch(lines)
        self._add_ports(ports)

    def make_namespaces(self, hosts: list[PlanNode], journal: Journal, advance) -> None:
        """Plain hosts: a network namespace each (the executor makes them: `ip netns add` costs O(namespaces) each)."""
        self.ex.netns_add([n.netns for n in hosts], on_done=advance)
        journal.mark([Resource("netns", n.netns) for n in hosts], "created")

    def _apply_netem(self, plan: Plan) -> None:
        """Delay, jitter and loss (netem), below the HTB class when the link is also shaped."""
        for link in plan.links:
            if not batches.needs_netem(link):
                continue
            p = link.params
            args = []
            if p.get("delay"):
                args += ["delay", p["delay"], *([p["jitter"]] if p.get("jitter") else [])]
            if p.get("loss"):
                args += ["loss", f"{p['loss']}%"]
            for end in (link.a, link.b):
                where = ["-n", end.netns] if end.netns else []
                parent = ["parent", "1:1", "handle", "10:"] if p.get("bw") else ["root"]
                self.ex.run(["tc", *where, "qdisc", "add", "dev", end.dev, *parent, "netem", *args])

    # -- destroy ---------------------------------------------------------
    def destroy(self, experiment: str, journaled: list[Resource], phases: Phases) -> list[Resource]:
        mark = marker(experiment)
        ns_prefix = f"{NETNS_PREFIX}{experiment}."
        known = set(journaled)
        journaled = journaled + [r for r in _traces(experiment) if r not in known]  # a journal cut short by kill -9
        with phases.phase("processes"):
            portforward.stop(experiment)

            def stop(base: str, _) -> None:  # instances side by side: each closes its own packet sockets
                if not ovsinstance.stop(Path(base)):
                    computenodes.remove_dirs([base])
            _side_by_side(stop, dict.fromkeys(r.name for r in journaled if r.kind == "ovs-instance"))
            namespaces = sorted({r.name for r in journaled if r.kind == "netns"} | _netns_with_prefix(ns_prefix))
            _kill_processes_in(namespaces)
        # Namespaces first: the kernel then removes their veths in one batched clean-up,
        # where `link del` costs ~20 ms per device.
        with phases.phase("namespaces", total=len(namespaces)) as step:
            self.ex.ip_batch((f"netns del {ns}" for ns in namespaces), force=True)
            _wait_gone({r.name for r in journaled if r.kind == "veth" and not r.netns})
            step.advance(len(namespaces))
        with phases.phase("switches"):
            if not _ovs_unasked(journaled):
                self.ex.ovs_vsctl([["--if-exists", "del-br", b] for b in self._ovs_bridges_of(experiment)])
        dirs = [r.name for r in journaled if r.kind == "dir"]
        if dirs:
            with phases.phase("compute nodes"):
                computenodes.remove_dirs(dirs)
        with phases.phase("links"):
            firewall.remove_rules(self.ex, experiment)
            # only root-namespace names: a host-to-host veth journaled as "eth0" must not match the machine's eth0
            root_named = {r.name for r in journaled
                          if r.kind in ("veth", "linux-bridge", "vxlan", "ovs-bridge") and not r.netns}
            self.ex.ip_batch((f"link del dev {d}" for d in _root_devices_of(mark, root_named)), force=True)
        return self._leftovers(experiment, journaled)

    def _ovs_bridges_of(self, experiment: str, ovs: Path | None = None) -> list[str]:
        """Bridges whose external_ids carry this experiment's marker (and no others): in the private OVS at
        `ovs` when it runs, else in the machine's."""
        private = ovs is not None and ovsinstance.running(ovs)
        if not self.ex.which("ovs-vsctl") or not (private or switchd.system_running()):
            return []
        db = [f"--db={ovsinstance.db(ovs)}"] if private else []
        proc = self.ex.run(["ovs-vsctl", *db, "--timeout=10", "--format=json", "--columns=name,external_ids",
                            "list", "Bridge"], check=False)
        if proc.returncode != 0:
            return []
        out = []
        for name, ext in json.loads(proc.stdout)["data"]:
            ids = dict(ext[1]) if ext[0] == "map" else {}
            if ids.get(MARKER_KEY) == experiment:
                out.append(name)
        return out

    def owned(self, experiment: str) -> tuple[list[Resource], list[str]]:
        traces = _traces(experiment)
        unasked = [] if switchd.system_running() else [f"Open vSwitch: {OVS_UNASKED}"]
        return self._leftovers(experiment, traces), unasked

    def _leftovers(self, experiment: str, journaled: list[Resource]) -> list[Resource]:
        left = [Resource("netns", ns) for ns in _netns_with_prefix(f"{NETNS_PREFIX}{experiment}.")]
        why = _ovs_unasked(journaled)
        left += [unchecked("Open vSwitch", why)] if why else [Resource("ovs-bridge", b) for b in self._ovs_bridges_of(experiment)]
        for r in journaled:
            if r.kind == "ovs-instance":
                left += [Resource("process", str(pid)) for pid in ovsinstance.pids(Path(r.name))]
                left += [r] if Path(r.name).exists() else []
        left += [Resource("device", d) for d in _root_devices_of(marker(experiment), set())]
        left += [Resource("iptables", " ".join(rule[3:])) for rule in firewall.rules_of(self.ex, experiment)]
        left += [Resource("process", str(pid)) for pid in portforward.pids_of(experiment)]
        left += [r for r in journaled if r.kind == "dir" and Path(r.name).exists()]
        return left

    # -- using it --------------------------------------------------------
    def exec_argv(self, node: PlanNode, argv: list[str]) -> list[str]:
        if node.netns:
            return ["ip", "netns", "exec", node.netns, *argv]
        ovs = switchd.instance_of_bridge(node.device) if node.kind == "switch" else None
        if ovs:  # in the switches' namespace, where ovs-vsctl and ovs-ofctl reach the experiment's own OVS
            return switchd.exec_argv(ovs, list(argv))
        return list(argv)  # switches and bridges live in the machine's root namespace

    def namespaces(self, experiment: str) -> set[str]:
        """The experiment's network namespaces on this machine."""
        return _netns_with_prefix(f"{NETNS_PREFIX}{experiment}.")

    def status(self, plan: Plan) -> list[NodeState]:
        """Per node, is its namespace or device there; a node's kind handler says more (provisioners.kinds)."""
        namespaces = self.namespaces(plan.experiment)
        # wherever `up` put them, whatever CLOUDEMU_OVS says now
        bridges = {b for ovs in switchd.instances_of(plan.experiment, plan.machine) or [None]
                   for b in self._ovs_bridges_of(plan.experiment, ovs)}
        present = devices.names()
        out = []
        for n in plan.nodes:
            if n.kind == "host":
                up = n.netns in namespaces
                out.append(NodeState(n.name, n.kind, "running" if up else "missing", n.ip or ""))
            elif n.kind == "switch":
                out.append(NodeState(n.name, n.kind, "running" if n.device in bridges else "missing", n.device))
            else:
                out.append(NodeState(n.name, n.kind, "running" if n.device in present else "missing", n.device))
        return out


def _port_problems(plan: Plan) -> list[str]:
    taken: dict[int, str] = {}
    problems = []
    for n in plan.nodes:
        for outer, _, *host in n.options.get("ports", ()):
            if outer in taken:
                problems.append(f"machine port {outer} is published by both {taken[outer]} and {n.name}")
            elif not portforward.port_free(outer, *host):
                problems.append(f"machine port {outer} (published by {n.name}) is already in use on this machine")
            taken[outer] = n.name
    return problems


# -- helpers: reading the machine --------------------------------------------
def _netns_with_prefix(prefix: str) -> set[str]:
    if not NETNS_DIR.exists():
        return set()
    return {name for name in os.listdir(NETNS_DIR) if name.startswith(prefix)}


#: ARP entries the machine's table must hold per emulated host (a few peers each way).
NEIGHBOURS_PER_HOST = 8
GC_THRESH3 = Path("/proc/sys/net/ipv4/neigh/default/gc_thresh3")


def _neighbour_table_problems(hosts: int) -> list[str]:
    """The kernel's ARP table is one for all namespaces: past gc_thresh3 entries, new neighbours fail everywhere."""
    try:
        limit = int(GC_THRESH3.read_text())
    except (OSError, ValueError):
        return []
    need = NEIGHBOURS_PER_HOST * hosts
    if need <= limit:
        return []
    return [f"{hosts} hosts need room for about {need} ARP entries, and this machine's table (one for every network "
            f"namespace) holds {limit}: raise it with sysctl -w net.ipv4.neigh.default.gc_thresh3={need * 4} "
            f"net.ipv4.neigh.default.gc_thresh2={need * 2} net.ipv4.neigh.default.gc_thresh1={need} "
            "(scripts/setup.sh does)"]


def _side_by_side(work, groups: dict) -> None:
    """`work(key, items)` for each group, from a few threads at once; raises the first error."""
    if len(groups) <= 1:
        for key, items in groups.items():
            work(key, items)
        return
    with ThreadPoolExecutor(max_workers=min(4, len(groups)), thread_name_prefix="ovs-instance") as pool:
        for done in [pool.submit(work, key, items) for key, items in groups.items()]:
            done.result()


def _traces(experiment: str) -> list[Resource]:
    """What /run/cloudemu/<exp> holds: the experiment's private OVS and its compute nodes' directories."""
    base = computenodes.ROOT / experiment
    if not base.is_dir():
        return []
    return [Resource("ovs-instance" if p.name.startswith(".ovs-") else "dir", str(p))
            for p in sorted(base.iterdir()) if p.is_dir()]


def _ovs_unasked(journaled: list[Resource]) -> str | None:
    """Why the machine's OVS cannot be asked for the experiment's bridges, when they live there (not in a
    private instance) and it does not answer: then they may still exist, and `down` must not say otherwise."""
    if not any(r.kind == "ovs-bridge" for r in journaled) or any(r.kind == "ovs-instance" for r in journaled):
        return None
    return None if switchd.system_running() else OVS_UNASKED


def _root_devices_of(mark: str, journaled: set[str]) -> list[str]:
    """Devices carrying our ifalias, plus journaled ones not yet marked (a crash between add and alias)."""
    return [dev for dev, alias in devices.aliases().items() if alias == mark or (dev in journaled and alias == "")]


def _wait_gone(wanted: set[str], timeout: float = 10.0, settle: float = 0.15) -> None:
    """Namespace clean-up is asynchronous: wait (bounded) while the peers of its veths are still going.

    Devices not tied to a namespace (switch-to-switch veths) never go by themselves, so
    stop once the count has not shrunk for `settle` seconds."""
    deadline = time.monotonic() + timeout
    left = wanted & devices.names()
    last_change = time.monotonic()
    while left and time.monotonic() < deadline and time.monotonic() - last_change < settle:
        time.sleep(0.02)
        now = wanted & devices.names()
        if len(now) < len(left):
            last_change = time.monotonic()
        left = now


def _kill_processes_in(namespaces: list[str]) -> None:
    """End every process inside our namespaces (only there: they keep a namespace alive). Never in the
    machine's own namespace or cloudemu's, even if one of ours was made to point at it."""
    targets = set()
    for ns in namespaces:
        try:
            st = os.stat(NETNS_DIR / ns)
            targets.add((st.st_dev, st.st_ino))
        except OSError:
            continue
    for protected in ("/proc/1/ns/net", "/proc/self/ns/net"):
        try:
            st = os.stat(protected)
        except OSError:  # pid 1 may be out of reach (a sandbox's init): ours is, and that is the machine's too
            continue
        targets.discard((st.st_dev, st.st_ino))
    if not targets:
        return
    inside = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            st = os.stat(f"/proc/{pid}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in targets:
            inside.append(int(pid))
    processes.end(inside)  # a compute node's vswitchd holds a packet socket per VM: taken over, then killed
