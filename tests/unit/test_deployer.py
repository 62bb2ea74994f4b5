"""A new engine is one class and one registry line: a fake one, registered here, deploys a plan through the
Deployer with a recording executor (no root, no kernel objects, no container daemon)."""

import subprocess

import pytest

from emulator import engines, kinds
from emulator.compiler.compile import compile_topology
from emulator.compiler.plan import Plan, PlanNode
from emulator.model import TopologyError
from emulator.runtime.events import Phases
from emulator.runtime.executor import LocalExecutor
from emulator.runtime.journal import Journal, Resource
from emulator.topology.loader import load_text
from provisioners import deployer as deployers
from provisioners import get, nsconfig
from provisioners.base import HostEngine, NodeState
from provisioners.kinds import NodeKind


class RecordingExecutor(LocalExecutor):
    """Records every command instead of running it; OVS's database answers with an empty table."""

    def __init__(self):
        self.ran: list[tuple[list[str], str]] = []

    def run(self, argv, *, input=None, check=True, timeout=300):
        self.ran.append((list(argv), input or ""))
        out = '{"data": [], "headings": []}' if argv[0] == "ovs-vsctl" else ""
        return subprocess.CompletedProcess(list(argv), 0, out, "")

    def netns_add(self, names, on_done=None):  # the real one makes them itself, not by command
        self.ip_batch(f"netns add {n}" for n in names)


class FakeEngine(HostEngine):
    """Containers that exist only in this dictionary."""

    name = "fake"
    boxes: dict[str, str] = {}

    def engine_problems(self, plan: Plan, nodes: list[PlanNode]) -> list[str]:
        return []

    def start(self, plan: Plan, node: PlanNode) -> int:
        FakeEngine.boxes[self.container_name(node)] = plan.experiment
        return 4242

    def containers_of(self, experiment: str) -> dict[str, str]:
        return {name: "running" for name, owner in FakeEngine.boxes.items() if owner == experiment}

    def remove(self, name: str) -> None:
        FakeEngine.boxes.pop(name, None)

    def run_detached(self, name: str, argv: list[str]) -> None:
        FakeEngine.boxes[name + ":ran"] = " ".join(argv)

    def exec_prefix(self, name: str) -> list[str]:
        return ["fake-exec", name]


@pytest.fixture
def fake_engine(monkeypatch, tmp_path):
    monkeypatch.setenv("CLOUDEMU_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setitem(engines.ENGINES, "fake", f"{__name__}:FakeEngine")  # the one registry line
    monkeypatch.setattr(nsconfig, "configure", lambda configs, *a, **kw: None)  # netlink needs root
    FakeEngine.boxes = {}


TOPOLOGY = """version: 1
name: fakes
defaults: {subnet: 10.91.0.0/24}
nodes:
  br: {kind: bridge}
  a: {provisioner: fake, image: "some/image:1", command: "serve --port 80"}
  b: {provisioner: fake, image: "some/image:1"}
  c: {}
links:
  - endpoints: [a, br]
  - endpoints: [b, br]
  - endpoints: [c, br]
"""


def test_a_registered_engine_deploys_through_the_deployer(fake_engine):
    plan = compile_topology(load_text(TOPOLOGY), tag="fak")
    assert plan.provisioner == "fake"  # the schema and the compiler know it from the registry
    ex = RecordingExecutor()
    deployer = get(plan.provisioner, ex)
    assert isinstance(deployer, deployers.Deployer) and isinstance(deployer.engines["fake"], FakeEngine)
    journal = Journal(plan.experiment)
    journal.create({"experiment": plan.experiment, "provisioner": plan.provisioner})
    journal.plan(deployer.resources(plan))
    deployer.create(plan, journal, Phases())
    names = {n.name: n for n in plan.nodes}
    assert set(FakeEngine.boxes) == {names["a"].options["container"], names["b"].options["container"],
                                     names["a"].options["container"] + ":ran"}
    text = "\n".join(stdin for _, stdin in ex.ran)
    assert f"netns attach {names['a'].netns} 4242" in text  # the container's namespace, named for the fabric
    assert f"netns add {names['c'].netns}" in text  # a plain host beside them
    assert "type bridge" in text and text.count("type veth") == 3
    assert FakeEngine.boxes[names["a"].options["container"] + ":ran"] == "/bin/sh -c serve --port 80"
    entries = {(r.kind, r.name): r.netns for r in journal.resources()}
    assert entries[("container", names["a"].options["container"])] == "fake"  # the journal names the engine
    assert deployer.exec_argv(names["b"], ["id"]) == ["fake-exec", names["b"].options["container"], "id"]
    left = deployer.destroy(plan.experiment, journal.resources(), Phases())
    assert [k for k in FakeEngine.boxes if not k.endswith(":ran")] == []  # down removed them through their engine
    assert not [r for r in left if r.kind in ("container", "unchecked")]


class Probe(NodeKind):
    """A kind that starts one program in each of its nodes once the links exist, and journals a directory."""

    name = "probe"

    def resources(self, plan, nodes):
        return [Resource("dir", f"/run/cloudemu/{plan.experiment}/probe-{n.name}") for n in nodes]

    def after_links(self, plan, nodes, journal, phases):
        links_made = any("type veth" in stdin for _, stdin in self.deployer.ex.ran)
        for node in nodes:
            self.deployer.ex.run(self.deployer.exec_argv(node, ["probe-agent", "--port", str(node.options["probe"]["port"]),
                                                                 "--links-were-up", str(links_made)]))

    def status(self, plan, nodes, states):
        mine = {n.name for n in nodes}
        return [NodeState(s.node, "probe", s.state, s.detail) if s.node in mine else s for s in states]


PROBES = """version: 1
name: probes
defaults: {subnet: 10.92.0.0/24}
nodes:
  br: {kind: bridge}
  p: {kind: probe, provisioner: fake, image: "some/image:1", port: 7}
  q: {kind: probe, port: 8}
  h: {}
links:
  - endpoints: [p, br]
  - endpoints: [q, br]
  - endpoints: [h, br]
"""


def test_a_registered_kind_deploys_through_the_deployer(fake_engine, monkeypatch):
    monkeypatch.setitem(kinds.KINDS, "probe", kinds.Kind(frozenset({"port"}), f"{__name__}:Probe"))  # the one line
    plan = compile_topology(load_text(PROBES), tag="prb")
    names = {n.name: n for n in plan.nodes}
    assert names["p"].options["probe"] == {"port": 7} and names["q"].options["probe"] == {"port": 8}
    assert "probe" not in names["h"].options
    ex = RecordingExecutor()
    deployer = get(plan.provisioner, ex)
    journal = Journal(plan.experiment)
    journal.create({"experiment": plan.experiment, "provisioner": plan.provisioner})
    deployer.create(plan, journal, Phases())
    ran = [argv for argv, _ in ex.ran if "probe-agent" in argv]
    assert ran == [["fake-exec", names["p"].options["container"], "probe-agent", "--port", "7", "--links-were-up", "True"],
                   ["ip", "netns", "exec", names["q"].netns, "probe-agent", "--port", "8", "--links-were-up", "True"]]
    journaled = {(r.kind, r.name) for r in journal.resources()}
    assert ("dir", f"/run/cloudemu/{plan.experiment}/probe-p") in journaled
    states = {s.node: s.kind for s in deployer.status(plan)}
    assert states["p"] == states["q"] == "probe" and states["h"] == "host"


def test_a_kinds_keys_are_checked_where_the_file_says_them(fake_engine, monkeypatch):
    monkeypatch.setitem(kinds.KINDS, "probe", kinds.Kind(frozenset({"port"}), f"{__name__}:Probe"))
    with pytest.raises(TopologyError) as bad:
        load_text(PROBES.replace("port: 8", "port: [8]"), "probes.yaml")
    assert bad.value.field == "nodes.q.port" and str(bad.value.where) == "probes.yaml:7"
    with pytest.raises(TopologyError) as unknown:
        load_text(PROBES.replace("port: 8", "colour: red"), "probes.yaml")
    assert unknown.value.field == "nodes.q.colour"
