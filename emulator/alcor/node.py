"""The compute-node program: its own OVS, ACA's bridge layout, the goal-state agent on 50001.

Runs inside the compute node (a namespace or a container): `python -m emulator.alcor.node
--dir D --vm-prefix ce.EXP.` starts ovsdb-server and ovs-vswitchd with their files under D,
lays out br-int/br-tun, moves the underlay address onto br-phy when the datapath is userspace
(OVS can tunnel only out of its own bridges then), and serves goal states until killed.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc

from emulator.alcor.agent import Agent
from emulator.alcor.dataplane import OvsDataplane
from emulator.alcor.flows import VXLAN_OFPORT
from emulator.alcor.ondemand import OnDemand
from emulator.alcor.schema import goalstateprovisioner_pb2 as gsp
from emulator.alcor.schema import goalstateprovisioner_pb2_grpc as rpc
from emulator.alcor.server import ACA_PORT, serve
from emulator.runtime import ovsinstance, processes, tokens
from provisioners import nsconfig

VXLAN_OVERHEAD = 50
log = logging.getLogger("cloudemu.node")


def underlay_of(dev: str) -> tuple[str, int, int, str]:
    """(address, prefix length, MTU, MAC) of the underlay device."""
    info = json.loads(subprocess.run(["ip", "-j", "addr", "show", "dev", dev], capture_output=True, text=True,
                                     check=True).stdout)[0]
    v4 = [a for a in info.get("addr_info", []) if a.get("family") == "inet"]
    if not v4:
        raise SystemExit(f"{dev} has no IPv4 address: the agent needs the host's underlay address")
    return v4[0]["local"], v4[0]["prefixlen"], info.get("mtu", 1500), info.get("address", "")


def first_ipv4_device() -> str:
    links = json.loads(subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True,
                                      check=True).stdout)
    for link in links:
        if link["ifname"] != "lo" and link.get("addr_info"):
            return link["ifname"]
    raise SystemExit("no device with an IPv4 address: a compute node needs its underlay address")


def move_underlay_to_br_phy(dp: OvsDataplane, dev: str, underlay: tuple[str, int, int, str]) -> None:
    """The userspace datapath tunnels only through an OVS bridge that holds the local address (br-phy)."""
    ip, prefix, mtu, mac = underlay
    routes = json.loads(subprocess.run(["ip", "-j", "route", "show", "dev", dev], capture_output=True, text=True,
                                       check=True).stdout)
    dp.vsctl([["--may-exist", "add-br", "br-phy"],
              ["set", "Bridge", "br-phy", "datapath_type=netdev", f"other_config:hwaddr={mac}"],
              ["--may-exist", "add-port", "br-phy", dev]])
    lines = [f"addr flush dev {dev}", f"link set br-phy mtu {mtu} up", f"addr add {ip}/{prefix} dev br-phy"]
    lines += [f"route add {r['dst']} via {r['gateway']} dev br-phy" for r in routes if r.get("gateway")]
    dp.ip_batch(lines)


def static_peers(dp: OvsDataplane, dev: str, underlay: tuple[str, int, int, str], path: Path) -> int:
    """Permanent neighbour entries for the other compute nodes on this node's underlay subnet.

    cloudemu knows every node's underlay address and MAC, as Mininet's --arp does: without them, every
    agent ARPs for every other host through one emulated switch, N^2 broadcasts (at 100 nodes, 95,000
    flow translations per node's OVS). A missing or empty file leaves ARP to do it."""
    ip, prefix = underlay[0], underlay[1]
    subnet = ipaddress.ip_interface(f"{ip}/{prefix}").network
    lines = []
    for entry in path.read_text().split("\n") if path.exists() else []:
        peer, _, mac = entry.partition(" ")
        if peer and peer != ip and ipaddress.ip_address(peer) in subnet:
            lines.append(f"neigh replace {peer} lladdr {mac} dev {dev} nud permanent")
    dp.ip_batch(lines)
    return len(lines)


def writable_sysctls(where: str = "/run/cloudemu-proc") -> None:
    """Inside a container /proc/sys is read-only; VMs need it (IPv6 off), so mount a proc of our own."""
    if os.access("/proc/sys/net/ipv6/conf/all/disable_ipv6", os.W_OK):
        return
    os.makedirs(where, exist_ok=True)
    if not os.path.ismount(where):
        subprocess.run(["mount", "-t", "proc", "proc", where], check=True)
    nsconfig.PROC_SYS = f"{where}/sys"


class NcmClient:
    """The controller the on-demand engine asks. After a failed connect a gRPC channel waits out a back-off that grows
    to two minutes, so an agent that asked before its NCM was up would stay deaf that long: a call that finds no NCM
    drops its channel, and the next question connects at once on a fresh one."""

    OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000)]

    def __init__(self, target: str):
        self.target = target
        self.lock = threading.Lock()
        self.stub = self._connect()

    def _connect(self) -> rpc.GoalStateProvisionerStub:
        return rpc.GoalStateProvisionerStub(grpc.insecure_channel(self.target, options=self.OPTIONS))

    def ask(self, request: gsp.HostRequest) -> gsp.HostRequestReply:
        stub = self.stub
        try:
            return stub.RequestGoalStates(request, timeout=5)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                with self.lock:
                    if self.stub is stub:  # not renewed by another question meanwhile
                        self.stub = self._connect()
            raise


def start_on_demand(agent: Agent, dp: OvsDataplane, ncm: str) -> OnDemand:
    engine = OnDemand(NcmClient(ncm).ask, lambda frame: None, agent.vni_of_vlan, agent.neighbour_mac,
                      agent.has_local)
    engine.send = dp.serve_demand(engine.punted)
    return engine


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dir", required=True, type=Path, help="where this node's OVS keeps its database, sockets, logs")
    p.add_argument("--vm-prefix", required=True, help="namespace name prefix of the VMs (ce.EXP.)")
    p.add_argument("--underlay", default="auto", help="the device holding the host's address (auto: the first with IPv4)")
    p.add_argument("--listen", default=f"0.0.0.0:{ACA_PORT}",
                   help="host:port; underlay:PORT listens on the node's underlay address only (ACA: 0.0.0.0)")
    p.add_argument("--socket", help="also serve on this unix socket (how cloudemu reaches the agent from the machine)")
    p.add_argument("--datapath", choices=["auto", "netdev", "system"], default="auto")
    p.add_argument("--underlay-peers", type=Path, help="a file of 'address MAC' lines: the other compute nodes")
    p.add_argument("--log", type=Path, help="write standard output and errors to this file (a container's agent)")
    p.add_argument("--ncm", help="on-demand mode: learn neighbours on a VM's first packet, asking this controller "
                                 "(host:port or unix:/path) with RequestGoalStates, as ACA's -a/-p")
    args = p.parse_args(argv)
    processes.log_to(args.log, logging.INFO)

    started = time.monotonic()

    def step(what: str) -> None:  # an agent that never says ready shows in its log how far it got
        log.info("%s (%.1f s)", what, time.monotonic() - started)
    writable_sysctls()
    # Taps, bridges and br-phy come up without IPv6 (the underlay is IPv4, VMs have none). Each IPv6
    # address the kernel gives a new tap makes this node's ovs-vswitchd re-read every interface's
    # addresses (it tracks tunnel endpoints): 100 ports beside 200 cost it 1.7 s of CPU instead of 0.4 s.
    nsconfig.no_ipv6_on_new_devices()
    step("starting OVS")
    ovsinstance.start(args.dir)
    step("OVS started")
    datapath = args.datapath
    if datapath == "auto":
        datapath = "system" if Path("/sys/module/openvswitch").exists() else "netdev"
    underlay = first_ipv4_device() if args.underlay == "auto" else args.underlay
    found = underlay_of(underlay)
    host_ip, _, mtu, _ = found
    dp = OvsDataplane(datapath_type=datapath, mtu=mtu - VXLAN_OVERHEAD, env=ovsinstance.env(args.dir),
                      on_demand=bool(args.ncm))
    dp.setup()
    step(f"bridges laid out ({datapath} datapath)")
    if datapath == "netdev":
        move_underlay_to_br_phy(dp, underlay, found)
        step("underlay address on br-phy")
    if args.underlay_peers:
        peers = static_peers(dp, "br-phy" if datapath == "netdev" else underlay, found, args.underlay_peers)
        step(f"{peers} peers' addresses known")
    address = args.listen.replace("underlay:", f"{host_ip}:", 1) if args.listen.startswith("underlay:") else args.listen
    listen = [address] + ([f"unix:{args.socket}"] if args.socket else [])
    agent = Agent(dp, host_ip, tokens.identifier(args.vm_prefix, "--vm-prefix"))
    dp.serve_dhcp(agent.answer_dhcp)
    step("DHCP answered on br-int's dhcp-punt port")
    if args.ncm:
        start_on_demand(agent, dp, args.ncm)
        step(f"on-demand: unknown destinations asked of {args.ncm}")
    server = serve(agent, *listen)
    print(json.dumps({"ready": True, "host_ip": host_ip, "listen": address, "datapath": datapath,
                      "vxlan_ofport": VXLAN_OFPORT}), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())
