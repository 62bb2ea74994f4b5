"""Hollow compute nodes: ACA's control-plane side at a tiny fraction of a full node's cost.

A hollow node is the full agent's core (agent.Agent: the same parsing, validation, state and statuses)
over a data plane that models instead of programming: the flows the full node would install are kept
as a table (keyed as OVS keys a flow: table, priority and match), VMs are recorded, no kernel device or
OVS is touched. Many hollow nodes share one process (a pack): one asyncio loop, one HTTP/2 gRPC socket
on 0.0.0.0:50001 in the pack's namespace, where every node's underlay address is configured, and a
connection finds its node by the address it arrived at (see h2server). cloudemu reaches the pack from
the machine over a unix socket, naming the node as the call's authority, as it reaches a full node's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import operator
import resource
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from emulator.alcor import flows
from emulator.alcor.agent import Agent, NeighborIntake, Reply
from emulator.alcor.dataplane import LocalPort, NewVm, OvsDataplane
from emulator.alcor.h2client import SERVICE
from emulator.alcor.h2server import GrpcProtocol, Method
from emulator.alcor.schema import goalstate_pb2
from emulator.alcor.wire import LeanGoalStateV2
from emulator.model import ACA_PORT
from emulator.runtime import processes, tokens

log = logging.getLogger("cloudemu.hollow")
#: br-tun's fixed pipeline, the same for every node: shared, not copied into each.
BASE_FLOWS: tuple[str, ...] = tuple(flows.base_flows())


_ADD = f"add cookie={flows.COOKIE},"
# a neighbour's flow items: (vni, vlan, mac, ip, host); its two flows are keyed by (vlan, mac) and (vlan, ip)
_VLAN, _MAC, _IP = operator.itemgetter(1), operator.itemgetter(2), operator.itemgetter(3)
_VLAN_MAC, _VLAN_IP = operator.itemgetter(1, 2), operator.itemgetter(1, 3)
_DELETE = "delete_strict "


def flow_key(line: str) -> str:
    """What identifies a flow in its table, as OVS sees it (table, priority, match): the line without its
    command word, cookie and actions. The agent's own two shapes are cut directly (200,000 lines a message)."""
    if line.startswith(_ADD):
        return line[len(_ADD):line.index(",actions=")]
    if line.startswith(_DELETE) and ",actions=" not in line:
        return line[len(_DELETE):]
    head = line.split(",actions=", 1)[0]
    if head.startswith(("add ", "delete_strict ", "delete ", "modify ")):
        head = head.split(" ", 1)[1]
    return ",".join(f for f in head.split(",") if not f.startswith("cookie="))


class ModelFlows:
    """A flow sink over a node's modelled tables: commit applies the message's changes as the bundle would.

    A neighbour's two flows (table 20's encapsulation, table 51's ARP answer) are kept as entries, not text:
    the agent has checked every field of them, and the text is made only when asked (ModelDataplane.flows),
    by the same functions that write the full node's. Other flows are kept as text, keyed as OVS keys them."""

    def __init__(self, dp: ModelDataplane):
        self.dp = dp
        self.lines: list = []
        self.int_lines: list[str] = []

    @staticmethod
    def encap(vni: int, vlan: int, mac: str, ip: str | None, host_ip: str) -> list:
        return [(vni, vlan, mac, ip, host_ip)]

    @staticmethod
    def delete(vlan: int, mac: str, ip: str | None) -> list:
        return [(vlan, mac, ip)]

    def add(self, lines: list) -> None:
        tokens.batch_text([x for x in lines if isinstance(x, str)], "ovs-ofctl")  # as the real bundle refuses it
        self.lines += lines

    def add_int(self, lines: list[str]) -> None:
        tokens.batch_text(lines, "ovs-ofctl")
        self.int_lines += lines

    def commit(self) -> None:
        neighbour_items = []
        for table, lines in ((self.dp.int_table, self.int_lines), (self.dp.table, self.lines)):
            for item in lines:
                if not isinstance(item, str):
                    neighbour_items.append(item)
                elif item[0] == "d":  # delete_strict
                    table.pop(flow_key(item), None)
                else:
                    table[flow_key(item)] = item[4:] if item.startswith("add ") else item
        self.lines, self.int_lines = [], []
        if neighbour_items:
            self.dp.apply(neighbour_items)

    def abort(self) -> None:
        self.lines, self.int_lines = [], []


class ModelDataplane:
    """The data plane of a hollow node: what the full node would have, as data.

    Its neighbours' flows are, as long as that is exact, the agent's neighbour table itself, drawn as flows
    when asked: no second table of 100,000 entries per node, and a pack's nodes share the entries (see
    agent.NeighborIntake). It is exact while every neighbour flow has one owner: flows keyed alike (a MAC or
    an address given twice in a VLAN) or a neighbour changed after its table was made replace and remove
    each other in OVS in an order the table alone does not say, so from then on the node keeps its flows as
    OVS would (`encaps`, `arps`), every message applied in turn."""

    CHUNK = OvsDataplane.CHUNK
    __slots__ = ("table", "int_table", "encaps", "arps", "vms", "exact", "neighbors", "vlans")

    def __init__(self) -> None:
        self.table: dict[str, str] = {}  # this node's other flows, as text (BASE_FLOWS besides)
        self.int_table: dict[str, str] = {}  # br-int's (security groups), as text
        self.encaps: dict[tuple[int, str], tuple[int, str]] = {}  # table 20: (VLAN, MAC) -> (VNI, host)
        self.arps: dict[tuple[int, str], str] = {}  # table 51: (VLAN, address) -> MAC
        self.vms = 0
        self.exact = False  # the flows kept in encaps and arps, not drawn from the agent's table
        self.neighbors: dict = {}
        self.vlans: dict[int, int] = {}

    def bind(self, agent: Agent) -> None:
        """The agent whose neighbour table and VLANs this node's flows are drawn from."""
        self.neighbors, self.vlans = agent.neighbors, agent.vlans

    def _drawn(self) -> list[tuple]:
        """The flow items (vni, vlan, mac, ip, host) the agent's neighbour table stands for."""
        return [(n.vni, self.vlans[n.vni], n.mac, n.ip, n.host_ip) for n in self.neighbors.values()]

    def before_neighbours(self) -> None:
        """A message with neighbours is coming: past the first, the flows are kept from now on."""
        if not self.exact and self.neighbors:
            _keep(self._drawn(), self.encaps, self.arps)
            self.exact = True

    def apply(self, items: list[tuple]) -> None:
        """One message's neighbour flow changes, in order. Drawn flows stay exact when the table had no
        neighbour before (see before_neighbours), nothing is removed and no two flows share a key."""
        if not self.exact:
            if set(map(len, items)) == {5}:  # only additions
                if len(set(map(_VLAN, items))) == 1:  # one VLAN (the usual message): the MACs and addresses alone
                    unique = len(set(map(_MAC, items))) == len(set(map(_IP, items))) == len(items)
                else:
                    unique = len(set(map(_VLAN_MAC, items))) == len(set(map(_VLAN_IP, items))) == len(items)
                if unique:
                    return
            self.exact = True
        _keep(items, self.encaps, self.arps)

    def setup(self) -> None:
        pass

    def flow_sink(self) -> ModelFlows:
        return ModelFlows(self)

    def make_vms(self, vms: list[NewVm]) -> None:
        self.vms += len(vms)

    def remove_vms(self, ports: list[LocalPort], *, force: bool = False) -> None:
        self.vms -= len(ports)

    def configure_vms(self, vms: list[NewVm]) -> None:
        pass

    def prime_tunnels(self, neighbors) -> None:
        pass

    def serve_dhcp(self, answer) -> None:
        pass  # a hollow node keeps its DHCP entries; no VM asks for them

    def serve_demand(self, punted):
        return lambda frame: None  # no VM sends a first packet

    def count(self) -> int:
        if self.exact:
            return len(self.table) + len(self.int_table) + len(self.encaps) + len(self.arps)
        return len(self.table) + len(self.int_table) + 2 * len(self.neighbors)

    def flows(self) -> list[str]:
        """br-tun's flows as the full node's would read (base pipeline and this node's own), written by the
        functions that write the full node's."""
        encaps, arps = (self.encaps, self.arps) if self.exact else _keep(self._drawn(), {}, {})
        encap = [flows.neighbor_flows(vni, vlan, mac, None, host)[0][4:] for (vlan, mac), (vni, host) in encaps.items()]
        arp = [flows.neighbor_flows(0, vlan, mac, ip, "0.0.0.0")[1][4:] for (vlan, ip), mac in arps.items()]
        return [*BASE_FLOWS, *self.table.values(), *encap, *arp]


def _keep(items: list[tuple], encaps: dict, arps: dict) -> tuple[dict, dict]:
    """Neighbour flow items applied in order to tables keyed as OVS keys their flows: (vni, vlan, mac, ip, host)
    adds a neighbour's two flows, (vlan, mac, ip) removes them."""
    for item in items:
        if len(item) == 5:
            vni, vlan, mac, ip, host_ip = item
            encaps[vlan, mac] = (vni, host_ip)
            if ip:
                arps[vlan, ip] = mac
        else:
            vlan, mac, ip = item
            encaps.pop((vlan, mac), None)
            if ip:
                arps.pop((vlan, ip), None)
    return encaps, arps


@dataclass(frozen=True)
class DelayModel:
    """How long the full agent takes on this machine, as `cloudemu alcor calibrate` measured it: a message costs
    per_message + per_port x its ports + per_neighbour x its neighbours. A hollow node under a model answers
    no sooner than that, one message at a time (as the agent's lock has it), and reports that time."""

    per_message_s: float
    per_port_s: float
    per_neighbour_s: float

    KEYS = {"per_message_ms": 1e-3, "per_port_ms": 1e-3, "per_neighbour_us": 1e-6}

    @classmethod
    def from_dict(cls, data: dict) -> DelayModel:
        """From a calibration file's figures; each a number of at least 0 and under a minute."""
        if not isinstance(data, dict):
            raise ValueError("a delay model is a mapping of per_message_ms, per_port_ms and per_neighbour_us")
        values = []
        for key, scale in cls.KEYS.items():
            value = data.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value * scale < 60:
                raise ValueError(f"{key}: a number of at least 0 and under a minute, not {value!r}")
            values.append(value * scale)
        return cls(*values)

    def as_dict(self) -> dict:
        return {key: round(value / scale, 3) for (key, scale), value in
                zip(self.KEYS.items(), (self.per_message_s, self.per_port_s, self.per_neighbour_s), strict=True)}

    def seconds(self, ports: int, neighbours: int) -> float:
        return self.per_message_s + self.per_port_s * ports + self.per_neighbour_s * neighbours


@dataclass
class HollowNode:
    name: str
    host_ip: str
    agent: Agent
    messages: int = 0
    free_at: float = 0.0  # under a delay model: when the node is done with the messages it was given

    def push(self, method, request) -> Reply:
        if request.neighbor_states:
            self.agent.dp.before_neighbours()
        reply = method(request)
        self.messages += 1
        return reply

    @property
    def errors(self) -> int:
        """Operations answered with anything but SUCCESS, in a reply or not (ACA's V2 reply omits neighbours)."""
        return self.agent.failures

    def state(self) -> dict:
        agent, dp = self.agent, self.agent.dp
        return {"node": self.name, "host_ip": self.host_ip, "messages": self.messages, "errors": self.errors,
                "vpcs": sorted(agent.vpcs), "subnets": sorted(agent.subnets),
                "ports": {p.id: {"vni": p.vni, "mac": p.mac, "ip": p.ip} for p in agent.ports.values()},
                "neighbours": len(agent.neighbors), "vlans": {str(k): v for k, v in agent.vlans.items()},
                "flows": dp.flows()}


@dataclass
class Pack:
    """The hollow nodes of one process, by underlay address."""

    vm_prefix: str
    nodes: dict[str, HollowNode] = field(default_factory=dict)
    intake: NeighborIntake = field(default_factory=NeighborIntake)  # one for the pack's nodes
    model: DelayModel | None = None  # None: each reply as soon as it is made

    def add(self, name: str, host_ip: str) -> HollowNode:
        dp = ModelDataplane()
        agent = Agent(dp, host_ip, self.vm_prefix, intake=self.intake)
        dp.bind(agent)
        node = HollowNode(name, host_ip, agent)
        self.nodes[host_ip] = node
        return node

    def hold(self, node: HollowNode, request, reply: Reply) -> float:
        """Seconds to hold `reply` so that the node takes what the model says; the reply then reports that time."""
        if self.model is None:
            return 0.0
        spent = reply.message_total_operation_time / 1e6
        total = max(spent, self.model.seconds(len(request.port_states), len(request.neighbor_states)))
        now = asyncio.get_running_loop().time()
        done = max(now - spent, node.free_at) + total  # it started when it arrived, or once free of earlier ones
        node.free_at = done
        reply.message_total_operation_time = min(int(total * 1e6), 2**32 - 1)
        return done - now

    def summary(self) -> dict:
        out = {"nodes": len(self.nodes), "messages": 0, "errors": 0, "ports": 0, "neighbours": 0, "flows": 0,
               "delays": self.model.as_dict() if self.model else None}
        for node in self.nodes.values():
            out["messages"] += node.messages
            out["errors"] += node.errors
            out["ports"] += len(node.agent.ports)
            out["neighbours"] += len(node.agent.neighbors)
            out["flows"] += node.agent.dp.count()
        return out

    def by_name(self, name: str) -> HollowNode | None:
        return next((n for n in self.nodes.values() if n.name == name), None)


def methods(pack: Pack | None = None) -> dict[str, Method]:
    """The pack's gRPC methods; replies held as its delay model says (see Pack.hold)."""
    hold = pack.hold if pack is not None else None
    return {
        SERVICE + "PushGoalStatesStream": Method(True, LeanGoalStateV2.FromString,
                                                 lambda node, gs: node.push(node.agent.push_v2, gs), hold),
        SERVICE + "PushNetworkResourceStates": Method(False, goalstate_pb2.GoalState.FromString,
                                                      lambda node, gs: node.push(node.agent.push_v1, gs), hold),
    }


async def _control(pack: Pack, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One JSON request per line: {"op": "summary"}, {"op": "state", "node": NAME}, or {"op": "delays", "model":
    {per_message_ms, per_port_ms, per_neighbour_us} or null}."""
    try:
        while line := await reader.readline():
            try:
                ask = json.loads(line)
            except ValueError:
                ask = None
            if not isinstance(ask, dict):
                answer = {"error": "one JSON object per line"}
            elif ask.get("op") == "summary":
                answer = pack.summary()
            elif ask.get("op") == "state":
                node = pack.by_name(str(ask.get("node")))
                answer = node.state() if node else {"error": f"no hollow node {ask.get('node')!r} here"}
            elif ask.get("op") == "delays":
                try:
                    pack.model = None if ask.get("model") is None else DelayModel.from_dict(ask["model"])
                    answer = {"delays": pack.model.as_dict() if pack.model else None}
                except ValueError as exc:
                    answer = {"error": str(exc)}
            else:
                answer = {"error": "op is summary, state or delays"}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
    finally:
        writer.close()


async def start(pack: Pack, listen: str | None, base: Path) -> list[asyncio.AbstractServer]:
    """The pack's gRPC (unix socket, and TCP when `listen`) and control servers, serving from now on."""
    loop = asyncio.get_running_loop()
    table = methods(pack)

    def protocol() -> GrpcProtocol:
        return GrpcProtocol(table, lambda address: pack.nodes.get(address))

    servers = [await loop.create_unix_server(protocol, str(base / "agent.sock"), backlog=4096)]
    if listen:
        host, _, port = listen.rpartition(":")
        servers.append(await loop.create_server(protocol, host, int(port), reuse_address=True, backlog=4096))
    servers.append(await asyncio.start_unix_server(lambda r, w: _control(pack, r, w), str(base / "control.sock")))
    return servers


async def serve_until_terminated(pack: Pack, listen: str | None, base: Path) -> None:
    servers = await start(pack, listen, base)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(json.dumps({"ready": True, "nodes": len(pack.nodes), "listen": listen}), flush=True)
    await stop.wait()
    for server in servers:
        server.close()


def read_nodes(path: Path) -> list[tuple[str, str]]:
    """'name address' per line (the address without its prefix length)."""
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            name, address = line.split()
            out.append((tokens.identifier(name, "node name"), address))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dir", required=True, type=Path, help="the pack's directory: agent.sock, control.sock, its log")
    p.add_argument("--nodes", required=True, type=Path, help="a file of 'name address' lines, one per hollow node")
    p.add_argument("--vm-prefix", required=True, help="namespace name prefix the full agent would give VMs")
    p.add_argument("--listen", default=f"0.0.0.0:{ACA_PORT}", help="host:port for gRPC over TCP ('' for none)")
    p.add_argument("--log", type=Path, help="write standard output and errors to this file")
    args = p.parse_args(argv)
    processes.log_to(args.log, logging.WARNING)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a connection per node may be open at once
    pack = Pack(tokens.identifier(args.vm_prefix, "--vm-prefix"))
    for name, address in read_nodes(args.nodes):
        pack.add(name, address)
    processes.run_async(serve_until_terminated(pack, args.listen or None, args.dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
