"""A new engine is one class and one registry line: a fake one, registered here, deploys a plan through the
Deployer with a recording executor (no root, no kernel objects, no container daemon)."""

import subprocess

import pytest

from emulator import engines
from emulator.compiler.compile import compile_topology
from emulator.compiler.plan import Plan, PlanNode
from emulator.runtime.events import Phases
from emulator.runtime.executor import LocalExecutor
from emulator.runtime.journal import Journal
from emulator.topology.loader import load_text
from provisioners import containers, get, nsconfig
from provisioners.base import HostEngine


class RecordingExecutor(LocalExecutor):
    """Records every command instead of running it; OVS's database answers with an empty table."""

    def __init__(self):
        self.ran: list[tuple[list[str], str]] = []

    def run(self, argv, *, input=None, check=True, timeout=300):
        self.ran.append((list(argv), input or ""))
        out = '{"data": [], "headings": []}' if argv[0] == "ovs-vsctl" else ""
        return subprocess.CompletedProcess(list(argv), 0, out, "")


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
    assert isinstance(deployer, containers.Deployer) and isinstance(deployer.engines["fake"], FakeEngine)
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
