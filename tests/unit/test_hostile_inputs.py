"""Untrusted names and oversized inputs end in exit 2 with a message, in seconds and bounded memory,
before anything is made."""

import os
import resource
import subprocess
from pathlib import Path

import pytest

from emulator.api import Emulation
from emulator.model import TopologyError
from emulator.runtime.journal import Journal
from emulator.topology.loader import load_file, load_text
from tests.conftest import CLI, ROOT

BAD_NAMES = ["../../etc", "a b", "x;touch /tmp/cloudemu-pwned;", "h1\n", "a/b", "-rf", "$(id)", "é", "x" * 40]
MEMORY_LIMIT = 3 * 1024**3


def limited_cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """The command line under a 3 GB address-space limit, with its own state directory."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    env = {**os.environ, "CLOUDEMU_STATE_DIR": str(tmp_path / "state")}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=ROOT, env=env, preexec_fn=limit,
                          timeout=120)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_bad_experiment_name_is_refused_everywhere_before_anything_is_made(name, tmp_path, monkeypatch):
    monkeypatch.setenv("CLOUDEMU_STATE_DIR", str(tmp_path / "state"))
    topo = load_file(ROOT / "topologies" / "smoke.yaml")
    with pytest.raises(TopologyError, match="experiment name"):
        Emulation(topo, name=name)
    for journal_name in (name, ""):
        with pytest.raises(TopologyError):
            Journal(journal_name)
    from emulator.runtime import worker

    with pytest.raises(TopologyError):
        worker.down({"experiment": name})
    assert not (tmp_path / "state" / "experiments").exists() or not any((tmp_path / "state" / "experiments").iterdir())


@pytest.mark.parametrize("command", ["up", "plan", "run", "down"])
def test_the_command_line_refuses_a_bad_name_with_exit_2(command, tmp_path):
    args = [command, "--name", "../../etc"] if command != "down" else ["down", "../../etc"]
    if command != "down":
        args.insert(1, "topologies/smoke.yaml")
    proc = limited_cli(*args, tmp_path=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "experiment name" in proc.stderr and "Traceback" not in proc.stderr
    assert not Path("/etc/.ovs-local").exists()


OVERSIZED = {
    "linear": "version: 1\nname: big\ntopology: {generator: linear, switches: 200000000}\n",
    "tree": "version: 1\nname: big\ntopology: {generator: tree, depth: 60}\n",
    "fattree": "version: 1\nname: big\ntopology: {generator: fattree, k: 1000}\n",
    "leafspine": "version: 1\nname: big\ntopology: {generator: leafspine, spines: 100000, leaves: 100000}\n",
    "region": "version: 1\nname: big\ntopology: {generator: region, racks: 1000000, hosts_per_rack: 1000}\n",
    "nested": "version: 1\nname: big\nnodes: " + "[" * 5000 + "]" * 5000 + "\n",
    "merges": "version: 1\nname: big\nx0: &x0 {a: 1, b: 2, c: 3, d: 4}\n"
              + "".join(f"x{i + 1}: &x{i + 1}\n  <<: [*x{i}, *x{i}]\n" for i in range(40)),
    "newline": 'version: 1\nname: big\nnodes:\n  "h1\\n": {}\n',
}


@pytest.mark.parametrize("case", sorted(OVERSIZED))
def test_oversized_and_malformed_topologies_end_in_exit_2(case, tmp_path):
    path = tmp_path / f"{case}.yaml"
    path.write_text(OVERSIZED[case])
    proc = limited_cli("validate", str(path), tmp_path=tmp_path)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and str(path) in proc.stderr


@pytest.mark.parametrize("spec", ["linear,1000000000", "tree,60", "tree,100000,3", "torus,100000,100000", "linear,3"])
def test_mininet_specs_are_bounded_too(spec, tmp_path):
    proc = limited_cli("validate", spec, tmp_path=tmp_path)
    if spec == "linear,3":
        assert proc.returncode == 0, proc.stderr
        return
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr


def test_graph_files_are_bounded(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    proc = limited_cli("validate", str(deep), tmp_path=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_a_large_region_within_bounds_still_loads():
    topo = load_text("version: 1\nname: r\ntopology: {generator: region, racks: 25000, hosts_per_rack: 40}\n")
    assert topo.summary()["nodes"] == 25000 * 41 + 16


def test_accepting_new_host_keys_appends_and_never_rewrites_known_hosts(tmp_path):
    """16 threads meeting 16 new machines at once: every line that was there stays, every new key is added."""
    import threading

    import paramiko

    from emulator.runtime.ssh import AppendNewHostKey

    path = tmp_path / "known_hosts"
    kept = ["# the admin's comment", "@revoked * ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC7",
            "@cert-authority *.example ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC8",
            "|1|hashedsalt=|hashedhost= ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC9"]
    path.write_text("\n".join(kept) + "\n")
    key = paramiko.RSAKey.generate(1024)
    policy = AppendNewHostKey(path)

    def meet(i: int) -> None:
        policy.missing_host_key(paramiko.SSHClient(), f"[10.0.0.{i}]:2222", key)
    threads = [threading.Thread(target=meet, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = path.read_text().splitlines()
    assert lines[:4] == kept
    assert sorted(ln.split()[0] for ln in lines[4:]) == sorted(f"[10.0.0.{i}]:2222" for i in range(16))
    assert all(ln.split()[1:] == ["ssh-rsa", key.get_base64()] for ln in lines[4:])


def test_an_interrupt_says_only_what_happened(tmp_path, monkeypatch):
    """"whatever up had made was removed" only when it was: not for down or goal states, not while a journal stays."""
    from emulator.cli import common as cli

    monkeypatch.setenv("CLOUDEMU_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(cli, "_bringing_up", [])
    assert cli._interrupted() == "interrupted"  # down, status, alcor load: nothing was being brought up
    cli._bringing_up.append("halfway")
    assert "removed" in cli._interrupted()  # up cleaned up after itself: no journal left
    Journal("halfway").create({"experiment": "halfway"})
    said = cli._interrupted()
    assert "removed" not in said and "cloudemu down halfway" in said
