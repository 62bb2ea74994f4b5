"""`cloudemu alcor load`: many ports through the agents, as Alcor's test controller and k6 scenarios do.

VPCs and ports are generated and spread round-robin over the compute nodes; ports go out in
batches (one GoalStateV2 per host per batch: the hosts' new ports as CREATE, and neighbour entries
so that every host knows every port of its VPCs on other hosts), at a constant or ramping rate.
Then connectivity is sampled (same VPC across compute nodes must ping, different VPCs must not)
and programming latency is reported per port and per message.
"""

from __future__ import annotations

import ipaddress
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from emulator.alcor import controller, goalstates
from emulator.alcor.schema import goalstate_pb2

VNI_BASE = 100_000
VNIS_PER_RUN = 65_536
MAX_PORTS_PER_VPC = 1_000_000
#: Bytes of goal states in flight at once (whole VPC tables are tens of MB a message): connections are cut to fit.
BYTES_IN_FLIGHT = 1 << 30
FAKE_HOSTS = "198.51.100.0/24"  # TEST-NET-2: remote hosts that exist only in flows when driving one external agent


@dataclass
class LoadSpec:
    vpcs: int
    ports_per_vpc: int
    batch: int = 0  # ports per batch; 0: everything in one message per host
    rate: float = 0.0  # ports/s; 0: as fast as the agents answer
    ramp: tuple[float, float] | None = None  # ports/s from, to (linear over the run)
    concurrency: int = controller.DEFAULT_CONCURRENCY  # messages in flight at once
    samples: int = 5
    run: int = 0  # 0..255: a load run's VPCs, VNIs, names and MACs differ from every other run's
    #: Who learns of a port as a neighbour: "others" (every other host of its VPC, incrementally per batch),
    #: "all" (the VPC's whole table to each of its hosts, as Alcor's DPM sends it: encoded once per VPC; the
    #: agent skips its own), "none" (ports only).
    neighbours: str = "others"

    @property
    def prefix(self) -> str:
        """Names of the generated VPCs and VMs: <prefix><vpc> and <prefix><vpc>p<port>."""
        return f"l{self.run:02x}v"


@dataclass
class LoadResult:
    ports: int
    messages: int
    seconds: float
    errors: list[str]
    per_port_ms: list[float]
    per_message_ms: list[float]
    agent_ms: list[float]
    timeline: list[tuple[float, float]]  # (sent at s, latency ms) per message
    reach: dict[str, list[Any]] = field(default_factory=dict)
    on_demand: dict[str, Any] | None = None  # the NCM's counts, on on-demand compute nodes
    pending: int = 0  # operations an agent answered PENDING (ACA, while a port's VIF is not there yet)

    def summary(self) -> dict[str, Any]:
        def pct(values: list[float]) -> dict[str, float]:
            if not values:
                return {}
            q = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
            return {"p50": round(q[49], 2), "p90": round(q[89], 2), "p99": round(q[98], 2), "max": round(max(values), 2)}
        return {"ports": self.ports, "messages": self.messages, "seconds": round(self.seconds, 3),
                "ports_per_s": round(self.ports / self.seconds, 1) if self.seconds else None,
                "errors": len(self.errors), "first_errors": self.errors[:10], "pending": self.pending,
                "port_latency_ms": pct(self.per_port_ms), "message_latency_ms": pct(self.per_message_ms),
                "agent_time_ms": pct(self.agent_ms), "reachability": self.reach,
                **({"on_demand": self.on_demand} if self.on_demand else {})}


def fake_hosts(n: int) -> list[str]:
    """Addresses of remote hosts that exist only in flows (TEST-NET-2, never routed)."""
    return [str(a) for a, _ in zip(ipaddress.ip_network(FAKE_HOSTS).hosts(), range(n), strict=False)]


def next_run(existing_names: list[str]) -> int:
    """The first run number no existing VM name uses."""
    used = {int(n[1:3], 16) for n in existing_names if len(n) > 3 and n[0] == "l" and n[3] == "v"
            and all(c in "0123456789abcdef" for c in n[1:3])}
    free = [r for r in range(256) if r not in used]
    if not free:
        raise ValueError("256 load runs exist in this experiment; take it down and up again")
    return free[0]


def vpc_cidr(i: int, ports: int) -> str:
    """VPC i's addresses: 10.(64+i%64).0.0/16, or for more than 65,000 ports the smallest 10.0.0.0/N that holds
    them (VPCs may share addresses: they are isolated)."""
    if ports <= 65_000:
        return f"10.{64 + i % 64}.0.0/16"
    return f"10.0.0.0/{32 - (ports + 2).bit_length()}"


def generate_ports(spec: LoadSpec, hosts: list[str]) -> list[goalstates.Port]:
    """VPC i of run r: VNI 100000+r*65536+i, vpc_cidr's addresses; port number n on host n (mod hosts), so every
    host gets its share; MACs 02:<r>:<port number>."""
    if spec.ports_per_vpc > MAX_PORTS_PER_VPC or spec.vpcs > VNIS_PER_RUN:
        raise ValueError(f"at most {MAX_PORTS_PER_VPC:,} ports per VPC and {VNIS_PER_RUN} VPCs per run")
    out = []
    n = 0
    r = spec.run
    for i in range(spec.vpcs):
        vpc = goalstates.Vpc(f"{spec.prefix}{i}", VNI_BASE + r * VNIS_PER_RUN + i, vpc_cidr(i, spec.ports_per_vpc))
        base = ipaddress.ip_network(vpc.cidr).network_address
        for j in range(spec.ports_per_vpc):
            n += 1
            out.append(goalstates.Port(f"{spec.prefix}{i}p{j}", vpc, hosts[(n - 1) % len(hosts)], str(base + j + 2),
                                       f"02:{r:02x}:{n >> 24 & 255:02x}:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:"
                                       f"{n & 255:02x}"))
    return out


def batches(ports: list[goalstates.Port], size: int, *, neighbours: bool = True
            ) -> Iterator[dict[str, goalstate_pb2.GoalStateV2]]:
    """Per batch, per host: the message that programs the host's new ports and tells it of its new neighbours
    (unless not `neighbours`)."""
    size = size or len(ports)
    seen_by_vpc: dict[str, list[goalstates.Port]] = defaultdict(list)
    host_vpcs: dict[str, set[str]] = defaultdict(set)
    made: dict = {}  # each port's neighbour entry, built once for all the hosts that get it
    for start in range(0, len(ports), size):
        batch = ports[start:start + size]
        joined: dict[str, set[str]] = defaultdict(set)  # host -> VPCs it gets its first port in now
        for p in batch:
            if p.vpc.name not in host_vpcs[p.host_ip]:
                joined[p.host_ip].add(p.vpc.name)
            host_vpcs[p.host_ip].add(p.vpc.name)
        messages: dict[str, goalstate_pb2.GoalStateV2] = {}
        for p in batch:
            goalstates.add(goalstates.message_for(messages, p.host_ip), p.host_ip, p)
            if not neighbours:
                continue
            for host, vpcs in host_vpcs.items():
                if host != p.host_ip and p.vpc.name in vpcs:
                    goalstates.add(goalstates.message_for(messages, host), host, p, neighbor=True, made=made)
        for host, vpcs in joined.items() if neighbours else ():  # new to a VPC: its earlier ports elsewhere
            for p in (q for name in sorted(vpcs) for q in seen_by_vpc[name] if q.host_ip != host):
                goalstates.add(goalstates.message_for(messages, host), host, p, neighbor=True, made=made)
        for p in batch:
            seen_by_vpc[p.vpc.name].append(p)
        yield messages


def whole_tables(ports: list[goalstates.Port]) -> dict[str, tuple[object, int]]:
    """Host -> (its one message, made when sent, its port count): its ports, and each of its VPCs' whole
    neighbour table, encoded once per VPC (goalstates.compose)."""
    by_vpc: dict[str, list[goalstates.Port]] = defaultdict(list)
    mine: dict[str, list[goalstates.Port]] = defaultdict(list)
    for p in ports:
        by_vpc[p.vpc.name].append(p)
        mine[p.host_ip].append(p)
    tables: dict[str, goalstates.Table] = {}

    def message(host: str) -> bytes:
        own: dict[str, goalstate_pb2.GoalStateV2] = {}
        for p in mine[host]:
            goalstates.add(goalstates.message_for(own, host), host, p)
        vpcs = sorted({p.vpc.name for p in mine[host]})
        for name in vpcs:
            if name not in tables:
                tables[name] = goalstates.table(by_vpc[name])
        return goalstates.compose(own[host], host, [tables[name] for name in vpcs])
    return {host: (lambda host=host: message(host), len(mine[host])) for host in mine}


def run(spec: LoadSpec, targets: dict[str, str], hosts: list[str] | None = None, progress=None,
        push=None) -> LoadResult:
    """Streams every batch to the agents of `targets` (host IP -> gRPC address) and times each reply. An unpaced
    load goes through `push(targets, messages, connections=, on_host_done=)` (Target.push_messages: on a cluster,
    each machine's worker pushes to its own agents), by default straight from here (controller.push_each)."""
    if spec.neighbours not in ("others", "all", "none"):
        raise ValueError("neighbours is others, all or none")
    if spec.neighbours == "all" and (spec.batch or spec.rate or spec.ramp):
        raise ValueError("whole VPC tables (neighbours: all) go as one message per host, unpaced: no batch or rate")
    hosts = hosts or sorted(targets)
    ports = generate_ports(spec, hosts)
    per_host: dict[str, list] = defaultdict(list)  # messages, or what makes them when they are sent
    counts: dict[str, list[int]] = defaultdict(list)  # ports each creates
    send_at: dict[str, list[float]] = defaultdict(list)  # host -> offset (s) of each of its messages
    connections = spec.concurrency
    if spec.neighbours == "all":
        for host, (make, n) in whole_tables(ports).items():
            if host in targets:
                per_host[host].append(make)
                counts[host].append(n)
        size = 300 * spec.ports_per_vpc * max(1, -(-len({p.vpc.name for p in ports}) // max(1, len(hosts))))
        connections = max(1, min(connections, BYTES_IN_FLIGHT // size))  # ~300 bytes a neighbour entry
    else:
        plan = list(batches(ports, spec.batch, neighbours=spec.neighbours == "others"))
        offsets = _schedule(spec, [sum(len(gs.port_states) for gs in m.values()) for m in plan])
        for messages, offset in zip(plan, offsets, strict=True):
            for host, gs in messages.items():
                if host in targets:
                    per_host[host].append(gs)
                    counts[host].append(len(gs.port_states))
                    send_at[host].append(offset)
    started = time.perf_counter()
    done = (lambda h, _: progress(sum(counts[h]))) if progress else None
    if not spec.rate and not spec.ramp:  # as fast as the agents take them: the asyncio client, a connection per host
        pushed = (push or controller.push_each)(targets, dict(per_host), connections=connections, on_host_done=done)
    else:  # paced: a thread per stream keeps each host's schedule
        pushed = controller.streams(targets, {h: _timed(per_host[h], send_at[h], started) for h in per_host},
                                    concurrency=spec.concurrency, started=started, on_stream_done=done)
    seconds = time.perf_counter() - started
    per_port, per_message, timeline = [], [], []
    index: dict[str, int] = defaultdict(int)
    for p in pushed:
        n = counts[p.host][index[p.host]]
        index[p.host] += 1
        ms = p.seconds * 1000
        per_message.append(ms)
        per_port += [ms] * n
        timeline.append((p.sent_at, ms))
    errors = [f"{p.host}: {f}" for p in pushed for f in p.failed]
    return LoadResult(sum(sum(c) for c in counts.values()), len(pushed), seconds,
                      errors, per_port, per_message, [p.agent_us / 1000 for p in pushed], timeline,
                      pending=sum(len(p.pending) for p in pushed))


def _schedule(spec: LoadSpec, sizes: list[int]) -> list[float]:
    """When each batch leaves (seconds from the start): as fast as possible, at `rate`, or ramping."""
    out, t, done = [], 0.0, 0
    total = sum(sizes) or 1
    for size in sizes:
        out.append(t)
        done += size
        rate = spec.rate
        if spec.ramp:
            a, b = spec.ramp
            rate = a + (b - a) * done / total
        if rate > 0:
            t += size / rate
    return out


def _timed(messages: list, offsets: list[float], started: float) -> Iterator:
    for msg, offset in zip(messages, offsets, strict=True):
        delay = started + offset - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        yield msg


def vm_pinger(plan, run) -> Callable[[goalstates.Port, str], bool]:
    """What pings from a load's VM (a port on a compute node of `plan`) to an address, wherever the node runs:
    `run(PlanNode, argv, timeout)` is the experiment's Target.run (here, or over the machine's SSH session)."""
    from emulator.compiler.plan import PlanNode

    computes = controller.agent_nodes(plan)  # a VM lives on a full node, never on a pack
    prefix = f"ce.{plan.experiment}."

    def ping(port: goalstates.Port, ip: str) -> bool:
        on = computes[port.host_ip]
        where = {k: on.options[k] for k in ("engine", "container") if k in on.options}  # a VM in a container node
        vm = PlanNode(port.name, "vm", on.machine, prefix + port.name, options=where)
        return run(vm, ["ping", "-c", "1", "-W", "1", ip], 10).returncode == 0
    return ping


def sample_reachability(ports: list[goalstates.Port], ping_from, samples: int, seed: int = 1) -> dict[str, list[Any]]:
    """Pings between sampled VMs: same VPC on different hosts must answer, different VPCs must not.
    `ping_from(port, ip)` pings (see vm_pinger)."""
    rng = random.Random(seed)
    by_vpc: dict[str, list[goalstates.Port]] = defaultdict(list)
    for p in ports:
        by_vpc[p.vpc.name].append(p)
    spread = [vpc for vpc in by_vpc.values() if len({p.host_ip for p in vpc}) > 1]
    same, other = [], []
    for _ in range(samples * 20):
        if len(same) >= samples or not spread:
            break
        vpc = rng.choice(spread)
        a, b = rng.choice(vpc), rng.choice(vpc)
        if a.host_ip != b.host_ip:
            same.append((a, b))
    for _ in range(samples * 20):
        if len(other) >= samples:
            break
        a, b = rng.choice(ports), rng.choice(ports)
        # b's address must not exist in a's VPC, and b must live on another host
        if a.vpc.name != b.vpc.name and a.host_ip != b.host_ip and not any(q.ip == b.ip for q in by_vpc[a.vpc.name]):
            other.append((a, b))

    def ping(pair) -> bool:
        a, b = pair
        return any(ping_from(a, b.ip) for _ in range(3))
    with ThreadPoolExecutor(max_workers=8) as pool:
        same_ok = list(pool.map(ping, same))
        other_ok = list(pool.map(ping, other))
    return {"same_vpc_failed": [f"{a.name}->{b.name}" for (a, b), ok in zip(same, same_ok, strict=True) if not ok],
            "other_vpc_reached": [f"{a.name}->{b.name}" for (a, b), ok in zip(other, other_ok, strict=True) if ok],
            "same_vpc_sampled": [len(same)], "other_vpc_sampled": [len(other)]}


def plot(result: LoadResult, path: str) -> None:
    """Latency of each message over the run, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    if result.timeline:
        xs, ys = zip(*sorted(result.timeline), strict=True)
        ax.plot(xs, ys, ".", markersize=3)
    ax.set_xlabel("sent at (s)")
    ax.set_ylabel("goal-state latency (ms)")
    s = result.summary()
    ax.set_title(f"{s['ports']} ports, {s['messages']} messages, {s['ports_per_s']} ports/s, "
                 f"p99 {s['message_latency_ms'].get('p99', '-')} ms")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
