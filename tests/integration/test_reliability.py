"""Concurrent up and down of one experiment, and engines that cannot answer: nothing lost, nothing left,
no traceback."""

import random
import subprocess
import time
from pathlib import Path

from tests.conftest import CLI, NEEDS_ROOT_OVS, ROOT, cli, leftovers

pytestmark = NEEDS_ROOT_OVS

OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"


def start_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_down_during_up_of_the_same_experiment_leaves_nothing(state_dir):
    """20 interleavings of up and down, then two downs at once: down waits for up (or finds nothing yet),
    never deletes the journal while up still creates."""
    rng = random.Random(16)
    name = "interleave"
    outcomes = []
    for _ in range(20):
        up = start_cli("up", "topologies/smoke.yaml", "--name", name, "-o", "json")
        time.sleep(rng.uniform(0.0, 1.5))
        down = cli("down", name, "-o", "json", check=False)
        up_out, up_err = up.communicate(timeout=300)
        assert "Traceback" not in up_err + down.stderr, up_err + down.stderr
        # up either ran whole (down waited, or came first and found nothing), or met down's lock and refused
        assert down.returncode == 0 and (up.returncode == 0 or (up.returncode == 2 and "busy" in up_err)), \
            (up.returncode, up_err, down.returncode, down.stderr)
        outcomes.append((up.returncode, '"not up"' in down.stdout))
        cli("down", name)  # whatever order they took, this one finds what is left
        assert leftovers(name) == {}
    assert len(outcomes) == 20 and (0, False) in outcomes  # at least once down waited for a running up
    cli("up", "topologies/smoke.yaml", "--name", name)
    downs = [start_cli("down", name, "-o", "json") for _ in range(2)]
    results = [(d.wait(timeout=300), d.stdout.read(), d.stderr.read()) for d in downs]
    assert all(code == 0 and "Traceback" not in err for code, _, err in results), results
    assert sorted('"not up"' in out for _, out, _ in results) == [False, True]  # one removed, the other found nothing
    assert leftovers(name) == {}


def test_up_refuses_while_the_experiment_is_being_brought_up(state_dir):
    name = "twice"
    first = start_cli("up", "topologies/smoke.yaml", "--name", name)
    time.sleep(0.3)
    second = cli("up", "topologies/smoke.yaml", "--name", name, check=False)
    first.communicate(timeout=300)
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert "busy" in second.stderr or "already up" in second.stderr
    cli("down", name)
    assert leftovers(name) == {}


def test_down_with_the_switch_daemon_stopped_says_partial_and_finishes_later(state_dir, monkeypatch):
    """Could not ask is not nothing left: the journal stays, exit 1, and the next down removes everything."""
    monkeypatch.setenv("CLOUDEMU_OVS", "system")  # the bridges live in the machine's ovs-vswitchd
    name = "outage"
    cli("up", "topologies/smoke.yaml", "--name", name)
    subprocess.run([OVS_CTL, "stop"], check=True, capture_output=True)
    try:
        first = cli("down", name, check=False)
        assert first.returncode == 1 and "Traceback" not in first.stderr, first.stderr
        assert "could not check Open vSwitch" in first.stderr
        assert name in cli("status", "-o", "json").stdout  # still known
    finally:
        subprocess.run([OVS_CTL, "--system-id=random", "--no-monitor", "start"], check=True, capture_output=True)
    second = cli("down", name, check=False)
    assert second.returncode == 0, second.stderr
    assert leftovers(name) == {}


def test_down_without_a_journal_removes_what_carries_the_markers(state_dir):
    name = "orphan"
    cli("up", "topologies/smoke.yaml", "--name", name)
    (state_dir / "experiments" / name / "journal.sqlite").unlink()  # the state directory lost, as after a disk mishap
    assert leftovers(name) != {}
    result = cli("down", name, "-o", "json")
    assert "markers" in result.stdout
    assert leftovers(name) == {}


def test_only_our_programs_count_as_ours(tmp_path):
    """An admin's `tail -f` of one of our logs names our directory too: it is not ours, and down spares it."""
    from emulator.runtime import processes
    from provisioners.computenodes import ROOT

    base = ROOT / "zz_marker_probe" / "cn1"
    base.mkdir(parents=True, exist_ok=True)
    (base / "agent.log").write_text("hello\n")
    tail = subprocess.Popen(["tail", "-f", str(base / "agent.log")], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.2)
        assert tail.pid not in processes.owned_by_marker(f"{base}/")
        assert tail.poll() is None
    finally:
        tail.kill()
        tail.wait()
        subprocess.run(["rm", "-rf", str(ROOT / "zz_marker_probe")], check=True)
    assert processes._is_ours("ovs-vswitchd", [b"ovs-vswitchd", b"unix:/run/cloudemu/x/db.sock"])
    assert processes._is_ours("python3.11", [b"python3", b"-m", b"emulator.alcor.node", b"--dir", b"/run/cloudemu/x"])
    assert not processes._is_ours("python3.11", [b"python3", b"-m", b"http.server", b"--directory", b"/run/cloudemu/x"])


def test_ending_processes_never_reaches_the_machines_own_namespace(monkeypatch):
    """A name of ours that points at the namespace cloudemu runs in (the machine's: ip netns attach NAME PID)
    ends nothing. (Processes are not really ended here: `end` only records.)"""
    import os

    from provisioners import fabric as netns

    ended = []
    monkeypatch.setattr(netns.processes, "end", lambda pids: ended.extend(pids) or [])
    name = "ce.zzprotect.h1"
    subprocess.run(["ip", "netns", "attach", name, str(os.getpid())], check=True)
    try:
        netns._kill_processes_in([name])
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)
    assert ended == []


def test_a_health_probe_never_makes_a_namespace():
    from provisioners import health

    name = "ce.zznohealth.h1"
    ok, seen = health.probe(name, {"tcp": 80, "interval": 0.1}, lambda argv: argv)
    assert not ok and not (Path("/run/netns") / name).exists(), seen


def test_a_compute_container_cannot_rewrite_the_peers_others_read(state_dir):
    """The underlay peers file is shared by every compute node of the experiment: containers see it read-only."""
    from emulator.api import Emulation
    from emulator.topology.loader import load_text

    name = "peers_ro"
    text = (f"version: 1\nname: {name}\ndefaults: {{subnet: 10.202.0.0/24}}\nnodes:\n  tor: {{kind: switch}}\n"
            "  cn1: {kind: compute, provisioner: docker}\n  cn2: {kind: compute, provisioner: docker}\n"
            "links:\n  - endpoints: [cn1, tor]\n  - endpoints: [cn2, tor]\n")
    emu = Emulation(load_text(text)).up()
    try:
        wrote = emu.node("cn1").run(["sh", "-c", "echo 10.202.0.99 02:00:00:00:00:99 >> /opt/cloudemu/peers/underlay-peers"])
        assert wrote.returncode != 0 and "Read-only" in wrote.stderr, wrote
        assert emu.node("cn1").run(["test", "-e", "/run/cloudemu-node/underlay-peers"]).returncode != 0
    finally:
        result = emu.down()
    assert result.clean and leftovers(name) == {}
