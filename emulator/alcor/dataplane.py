"""What a compute host's data plane is asked to do, in intents; and the OVS/netlink one that does it.

The agent (agent.py) decides: it parses and validates goal states, keeps VLANs and statuses, and
chooses the flows. A `Dataplane` carries out: a flow sink (add, commit all or nothing, abort), VM
links made and removed, ports added to br-int on their VLANs, VMs configured, links brought up,
tunnel endpoints primed. `OvsDataplane` holds every process, netlink and OVS call; `RecordingDataplane`
only records (unit tests, and the hollow compute nodes of a region), so both run the same agent.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from emulator.alcor import flows, neighbours
from emulator.model import CloudemuError
from emulator.runtime import ovsinstance, tokens
from emulator.runtime.executor import within_open_files
from provisioners import nsconfig

log = logging.getLogger("cloudemu.agent")
SOL_PACKET, PACKET_AUXDATA, TP_STATUS_VLAN_VALID = 263, 8, 0x10
AUXDATA = struct.Struct("IIIHHHH")  # struct tpacket_auxdata: status, len, snaplen, mac, net, vlan_tci, vlan_tpid


def with_vlan_tag(frame: bytes, ancillary: list) -> bytes:
    """The frame as it was on the wire: its 802.1Q tag, which the kernel moved to the packet's metadata, put back."""
    for level, kind, data in ancillary:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= AUXDATA.size:
            status, _, _, _, _, tci, tpid = AUXDATA.unpack_from(data)
            if status & TP_STATUS_VLAN_VALID:
                return frame[:12] + struct.pack("!HH", tpid or 0x8100, tci) + frame[12:]
    return frame


class DataplaneError(CloudemuError, RuntimeError):
    pass


@dataclass
class LocalPort:
    id: str
    tap: str
    netns: str
    vni: int
    mac: str
    ip: str


@dataclass
class NewVm:
    port: LocalPort
    vlan: int
    gateway: str
    dhcp: bool = False  # it boots taking its address by DHCP (the host has a DHCP entry for its MAC)


class FlowSink(Protocol):
    """Where a message's flows go; `encap` and `delete` write a neighbour's flows in the sink's own form
    (the agent chooses which flows, the sink how they are written: text for ovs-ofctl, or a model's entries)."""

    lines: list
    int_lines: list  # br-int's (the security groups'), applied just before br-tun's

    def encap(self, vni: int, vlan: int, mac: str, ip: str | None, host_ip: str) -> list: ...
    def delete(self, vlan: int, mac: str, ip: str | None) -> list: ...
    def add(self, lines: list) -> None: ...
    def add_int(self, lines: list[str]) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


class Dataplane(Protocol):
    """The intents of one compute host. Each raises DataplaneError when it could not be done."""

    #: Lines a flow sink takes before it is worth handing them on (the agent batches its loop by it).
    CHUNK: int

    def setup(self) -> None: ...
    def flow_sink(self) -> FlowSink: ...
    def make_vms(self, vms: list[NewVm]) -> None: ...
    def remove_vms(self, ports: list[LocalPort], *, force: bool = False) -> None: ...
    def configure_vms(self, vms: list[NewVm]) -> None: ...
    def prime_tunnels(self, neighbors: Iterable) -> None: ...  # each with its host_ip
    def serve_dhcp(self, answer: Callable[[bytes], bytes | None]) -> None: ...  # frames punted from br-int
    def serve_demand(self, punted: Callable[[bytes], None]) -> Callable[[bytes], None]: ...  # from br-tun; -> send


class OvsDataplane:
    """The OVS instance and namespaces of one compute host, driven by batched commands."""

    CHUNK = 4096

    def __init__(self, *, datapath_type: str = "netdev", mtu: int = 1450, env: dict[str, str] | None = None,
                 on_demand: bool = False):
        self.datapath_type, self.mtu, self.on_demand = datapath_type, mtu, on_demand
        self.env = {**os.environ, **(env or {})}
        self.tx_csum_off = datapath_type == "netdev"  # TCP through a userspace datapath needs it
        self.primed: set[str] = set()  # remote hosts whose underlay address has been resolved

    # -- the one way out to the machine ------------------------------------------
    def run(self, argv: list[str], text: str | None = None) -> str:
        proc = subprocess.run(tokens.argv_words(argv), input=text, capture_output=True, text=True, env=self.env, timeout=600)
        if proc.returncode != 0:
            raise DataplaneError(f"{argv[0]} failed: {proc.stderr.strip()[-500:]}")
        return proc.stdout

    def vsctl(self, commands: list[list[str]]) -> None:
        if commands:
            argv = ["ovs-vsctl", "--timeout=60"]
            for cmd in commands:
                argv += ["--", *cmd]
            self.run(argv)

    def ip_batch(self, lines: list[str], *, force: bool = False) -> None:
        """`force` goes on past errors and reports none: for undoing what may be half made."""
        for part in within_open_files(lines):
            text = tokens.batch_text(part, "ip")
            if not force:
                self.run(["ip", "-batch", "-"], text)
                continue
            try:
                self.run(["ip", "-force", "-batch", "-"], text)
            except DataplaneError:
                pass  # what could be removed was; the rest was not there

    def links_up(self, devices: list[str]) -> None:
        nsconfig.links_up(devices)

    # -- flows ------------------------------------------------------------------------
    #: Flow lines go to ovs-ofctl while the message is still being read (see FlowBatch).
    streams_flows = True
    FLOWS_ARGV = ["ovs-ofctl", "-O", "OpenFlow14", "--bundle", "add-flows", "br-tun", "-"]
    INT_FLOWS_ARGV = [*FLOWS_ARGV[:-2], "br-int", "-"]

    def add_flows(self, lines: list[str], argv: list[str] = FLOWS_ARGV) -> None:
        """All of a message's flow changes of one bridge in one OpenFlow bundle: applied together or not at all."""
        if lines:
            self.run(argv, tokens.batch_text(lines, "ovs-ofctl"))

    def flow_sink(self) -> FlowBatch:
        return FlowBatch(self)

    #: Revalidators wake every 10 s instead of 0.5 s (flow table changes still revalidate at once). Each wake-up
    #: runs the main loop over every port: 100 idle nodes of 100 ports spent 0.3 of a core on it. Interface
    #: statistics go to the database hourly, not every 5 s (a netlink query per port each time; 100 nodes of
    #: 100 ports made 2,000 a second); OpenFlow's port counters (ovs-ofctl dump-ports) stay live.
    QUIET = ["set", "Open_vSwitch", ".", "other_config:max-revalidator=10000", "other_config:stats-update-interval=3600000"]

    def setup(self) -> None:
        self.vsctl([self.QUIET, *flows.bridge_commands(self.datapath_type, on_demand=self.on_demand)])
        for bridge, base, argv in (("br-tun", flows.base_flows(on_demand=self.on_demand), self.FLOWS_ARGV),
                                   ("br-int", flows.int_base_flows(), self.INT_FLOWS_ARGV)):
            self.run(["ovs-ofctl", "del-flows", bridge])
            self.add_flows(base, argv)

    # -- VMs ----------------------------------------------------------------------------
    def make_vms(self, vms: list[NewVm]) -> None:
        """Each VM's namespace, then all the veths at once, then their ports on br-int.

        Every link event in this namespace makes ovs-vswitchd reconfigure all its ports, so the taps
        are made in one burst (after the slow namespaces, not between them), already promiscuous (OVS
        would set that, one more event each), and stay down until the VMs are configured."""
        mtu = self.mtu
        lines = [f"netns add {vm.port.netns}" for vm in vms]
        lines += [f"link add {p.tap} mtu {mtu} promisc on type veth peer name eth0 mtu {mtu} address {p.mac} netns {p.netns}"
                  for p in (vm.port for vm in vms)]
        self.ip_batch(lines)
        self.vsctl([c for vm in vms for c in flows.port_commands(vm.port.tap, vm.vlan, vm.port.id, vm.port.mac)])

    def remove_vms(self, ports: list[LocalPort], *, force: bool = False) -> None:
        self.vsctl([["--if-exists", "del-port", "br-int", p.tap] for p in ports])
        self.ip_batch([f"netns del {p.netns}" for p in ports], force=force)

    def configure_vms(self, vms: list[NewVm]) -> None:
        """Addresses, link state and default route inside each new VM, over netlink from one thread pool;
        the taps come up last, together: while they are down, OVS sees no link event (each makes it
        reconfigure every port) as the ports join and the VMs are configured. A DHCP VM then runs its
        client (udhcpc), which takes its address from this host's DHCP answers."""
        try:
            nsconfig.configure([nsconfig.NamespaceConfig(vm.port.netns, [nsconfig.IfaceConfig(
                "eth0", None if vm.dhcp else vm.port.ip, tx_csum_off=self.tx_csum_off)],
                gateway=None if vm.dhcp else vm.gateway or None, ipv6=False) for vm in vms])
            self.links_up([vm.port.tap for vm in vms])
        except Exception as exc:  # noqa: BLE001 - any netlink failure fails the VMs it touched
            raise DataplaneError(f"configuring {len(vms)} VM(s): {exc}") from exc
        booting = [vm for vm in vms if vm.dhcp]
        if booting:
            with ThreadPoolExecutor(max_workers=min(16, len(booting))) as pool:
                failed = [vm.port.id for vm, ok in zip(booting, pool.map(self._dhcp_client, booting), strict=True)
                          if not ok]
            if failed:
                raise DataplaneError(f"{len(failed)} VM(s) got no DHCP lease: {', '.join(failed[:5])}")

    #: udhcpc's hook: the lease becomes the VM's address and route, and is written where `leases` says (a VM's
    #: namespace shares the machine's /etc: its resolv.conf is not the place for the DNS servers).
    HOOK = """#!/bin/sh
case "$1" in
  deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-$subnet}" dev "$interface"
    if [ -n "$router" ]; then ip route replace default via "${router%% *}" dev "$interface"; fi
    printf 'ip=%s/%s\nrouter=%s\ndns=%s\nhostname=%s\n' "$ip" "${mask:-$subnet}" "$router" "$dns" "$hostname" \
      > "$CLOUDEMU_LEASE" ;;
esac
exit 0
"""

    def leases(self) -> str:
        return os.path.join(self.env.get("OVS_RUNDIR", "/tmp"), "leases")

    def _dhcp_client(self, vm: NewVm) -> bool:
        """The VM's DHCP client, once: DISCOVER, OFFER, REQUEST, ACK (five tries a second apart)."""
        hook = os.path.join(self.leases(), "udhcpc.hook")
        if not os.path.exists(hook):
            os.makedirs(self.leases(), exist_ok=True)
            with open(hook + ".new", "w") as f:
                f.write(self.HOOK)
            os.chmod(hook + ".new", 0o755)
            os.replace(hook + ".new", hook)
        lease = os.path.join(self.leases(), tokens.identifier(vm.port.netns, "VM namespace"))
        argv = ["ip", "netns", "exec", vm.port.netns, "udhcpc", "-i", "eth0", "-f", "-n", "-q", "-t", "5", "-T", "1",
                "-s", hook]
        proc = subprocess.run(tokens.argv_words(argv), capture_output=True, text=True, timeout=60,
                              env={**self.env, "CLOUDEMU_LEASE": lease})
        if proc.returncode != 0 or not os.path.exists(lease):
            log.warning("VM %s: udhcpc failed (%d): %s", vm.port.id, proc.returncode, proc.stderr.strip()[-300:])
            return False
        return True

    # -- DHCP ------------------------------------------------------------------------------
    def serve_dhcp(self, answer: Callable[[bytes], bytes | None]) -> None:
        """Frames punted to br-int's DHCP port are answered by `answer`, from a thread of their own."""
        self._serve_port(flows.DHCP_PORT, "dhcp", answer)

    def serve_demand(self, punted: Callable[[bytes], None]) -> Callable[[bytes], None]:
        """Frames br-tun punts in on-demand mode go to `punted`; what it returns sends frames back into br-tun."""
        return self._serve_port(flows.DEMAND_PORT, "on-demand", punted)

    def _serve_port(self, port: str, name: str, handle: Callable[[bytes], bytes | None]) -> Callable[[bytes], None]:
        """Every frame OVS outputs to an internal port, to `handle` on a thread of its own, which sends back what it
        returns at once; returns the port's send, for answers that come later."""
        self.run(["ip", "link", "set", port, "up"])
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)  # the kernel takes a VLAN tag off a frame it receives
        sock.bind((port, 0))

        def serve() -> None:
            while True:
                frame, ancillary, _, (_, _, kind, *_) = sock.recvmsg(65536, socket.CMSG_SPACE(AUXDATA.size))
                if kind == socket.PACKET_OUTGOING:
                    continue  # our own frames, seen again
                try:
                    reply = handle(with_vlan_tag(frame, ancillary))
                    if reply:
                        sock.send(reply)
                except Exception as exc:  # noqa: BLE001 - one bad frame must not end the server
                    log.warning("%s: %s", name, exc)
        threading.Thread(target=serve, name=name, daemon=True).start()
        return sock.send

    # -- tunnels --------------------------------------------------------------------------
    def prime_tunnels(self, neighbors: Iterable) -> None:
        """Tell OVS the MAC of each new remote host now, not on a VM's first packet.

        A userspace datapath drops a packet to a tunnel endpoint whose MAC it does not know (it sends
        an ARP request instead), so a VM's first ping would be lost. A background thread writes what
        br-phy's neighbour table knows (cloudemu gives it its peers statically) into OVS's tunnel
        neighbour table; for an address it lacks, an empty UDP datagram makes the kernel ask. The
        message's reply does not wait: an endpoint may never answer."""
        fresh = {n.host_ip for n in neighbors} - self.primed
        self.primed |= fresh
        if fresh and self.datapath_type == "netdev":
            threading.Thread(target=self._resolve, args=(fresh,), name="prime-tunnels", daemon=True).start()

    def _resolve(self, hosts: set[str], wait: float = 3.0) -> None:
        def knock(missing: set[str]) -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for ip in missing:
                    try:
                        s.sendto(b"", (ip, 9))  # the discard port: nothing listens
                    except OSError:
                        pass
        pending = set(hosts)
        try:
            for found in neighbours.resolved("br-phy", pending, wait, knock):
                ovsinstance.appctl(self.env["OVS_RUNDIR"], [["tnl/neigh/set", "br-phy", ip, mac] for ip, mac in found])
                pending -= {ip for ip, _ in found}
        except (OSError, RuntimeError) as exc:
            log.warning("priming tunnel endpoints failed: %s", exc)
        self.primed -= pending  # the unresolved are tried again with a later message


class FlowBatch:
    """A message's flow changes, piped to one ovs-ofctl bundle as they are made.

    ovs-ofctl parses while the agent still works through the message, on the other core: for
    10,000 neighbours that hides most of the agent's own time. Nothing is applied before `commit`
    (the bundle commits at end of input); `abort` kills ovs-ofctl, so nothing is applied at all."""

    CHUNK = OvsDataplane.CHUNK
    COMMIT_TIMEOUT = 300  # 100,000 neighbours commit in about 4 s on this machine
    encap = staticmethod(flows.neighbor_flows)
    delete = staticmethod(flows.neighbor_delete)

    def __init__(self, dp: OvsDataplane):
        self.dp, self.lines, self.proc, self.sent = dp, [], None, 0
        self.int_lines: list[str] = []

    def add_int(self, lines: list[str]) -> None:
        tokens.batch_text(lines, "ovs-ofctl")  # refused now, not once br-tun's bundle is half sent
        self.int_lines += lines

    def add(self, lines: list[str]) -> None:
        self.lines += lines
        if self.dp.streams_flows and len(self.lines) - self.sent >= self.CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self.proc is None:
            self.proc = subprocess.Popen(self.dp.FLOWS_ARGV, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, text=True, env=self.dp.env)
        self.proc.stdin.write(tokens.batch_text(self.lines[self.sent:], "ovs-ofctl"))
        self.sent = len(self.lines)

    def commit(self) -> None:
        """br-int's bundle, then br-tun's (if br-int's fails, br-tun's is not applied either)."""
        if self.int_lines:
            try:
                self.dp.add_flows(self.int_lines, self.dp.INT_FLOWS_ARGV)
            except DataplaneError:
                self.abort()
                raise
        if not self.dp.streams_flows:
            self.dp.add_flows(self.lines)
            return
        if not self.lines:
            return
        self._flush()
        try:
            _, error = self.proc.communicate(timeout=self.COMMIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.abort()  # killed before the end of input: the bundle is not committed
            raise DataplaneError(f"ovs-ofctl did not finish the bundle within {self.COMMIT_TIMEOUT} s") from None
        if self.proc.returncode != 0:
            raise DataplaneError(f"ovs-ofctl failed: {error.strip()[-500:]}")

    def abort(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass
class RecordedFlows:
    """A flow sink that keeps what was committed, in order."""

    into: list[str]
    into_int: list[str]
    lines: list[str] = field(default_factory=list)
    int_lines: list[str] = field(default_factory=list)
    encap = staticmethod(flows.neighbor_flows)
    delete = staticmethod(flows.neighbor_delete)

    def add(self, lines: list[str]) -> None:
        tokens.batch_text(lines, "ovs-ofctl")  # refused here as the real bundle would refuse it
        self.lines += lines

    def add_int(self, lines: list[str]) -> None:
        tokens.batch_text(lines, "ovs-ofctl")
        self.int_lines += lines

    def commit(self) -> None:
        self.into_int += self.int_lines
        self.into += self.lines

    def abort(self) -> None:
        self.lines, self.int_lines = [], []


class RecordingDataplane:
    """A data plane that only records the intents it is given: the agent's decisions, without a kernel
    device or an OVS. What the agent would have made is in `vms`, `flows` and `calls`."""

    CHUNK = OvsDataplane.CHUNK

    def __init__(self) -> None:
        self.flows: list[str] = []
        self.int_flows: list[str] = []  # br-int's
        self.vms: dict[str, NewVm] = {}  # port id ->
        self.calls: list[tuple[str, ...]] = []

    def setup(self) -> None:
        self.flows = flows.base_flows()
        self.int_flows = flows.int_base_flows()

    def flow_sink(self) -> RecordedFlows:
        return RecordedFlows(self.flows, self.int_flows)

    def make_vms(self, vms: list[NewVm]) -> None:
        self.calls.append(("make", *(vm.port.id for vm in vms)))
        self.vms.update((vm.port.id, vm) for vm in vms)

    def remove_vms(self, ports: list[LocalPort], *, force: bool = False) -> None:
        self.calls.append(("remove", *(p.id for p in ports)))
        for p in ports:
            self.vms.pop(p.id, None)

    def configure_vms(self, vms: list[NewVm]) -> None:
        self.calls.append(("configure", *(vm.port.id for vm in vms)))
        if any(vm.dhcp for vm in vms):
            self.calls.append(("dhcp", *(vm.port.id for vm in vms if vm.dhcp)))

    def prime_tunnels(self, neighbors: Iterable) -> None:
        pass

    def serve_dhcp(self, answer: Callable[[bytes], bytes | None]) -> None:
        self.answer = answer  # a test hands it frames

