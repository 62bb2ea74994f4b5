"""A private Open vSwitch (ovsdb-server + ovs-vswitchd) with its own run, database and log directories.

A testbed machine and an emulated compute node each run one, so that their bridges (br-int,
br-tun...) do not meet the machine's. Clients reach it through OVS_RUNDIR (see `env`).
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from emulator.runtime import processes

OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"


def env(base: Path) -> dict[str, str]:
    """What ovs-vsctl/ovs-ofctl need in their environment to talk to this instance."""
    return {"OVS_RUNDIR": str(base / "run"), "OVS_DBDIR": str(base / "db"), "OVS_LOGDIR": str(base / "log")}


def db(base: Path) -> str:
    """The instance's database, as ovs-vsctl's --db and ovs-vswitchd take it."""
    return f"unix:{env(base)['OVS_RUNDIR']}/db.sock"


def start(base: Path, prefix: list[str] | None = None, *, switch: bool = True) -> list[int]:
    """Starts both daemons (under `prefix`, e.g. an nsenter into a namespace); returns their pids. Without `switch`,
    the database alone: it takes a whole configuration before ovs-vswitchd reads it (start_switch)."""
    where = env(base)
    full = {**os.environ, **where}
    for d in where.values():
        Path(d).mkdir(parents=True, exist_ok=True)
    run, log = where["OVS_RUNDIR"], where["OVS_LOGDIR"]
    conf = Path(where["OVS_DBDIR"]) / "conf.db"
    if not conf.exists():
        shutil.copyfile(_empty_database(), conf)
    pre = list(prefix or [])
    _run([*pre, "ovsdb-server", str(conf), f"--remote=punix:{run}/db.sock", f"--pidfile={run}/ovsdb-server.pid",
          "--detach", f"--log-file={log}/ovsdb-server.log"], full)
    if not switch:  # the caller's first transaction adds the Open_vSwitch row, as ovs-vsctl does when it is missing
        return [int(Path(run, "ovsdb-server.pid").read_text())]
    _run(["ovs-vsctl", f"--db={db(base)}", "--no-wait", "init"], full)
    return [*start_switch(base, prefix)]


@functools.cache
def _empty_database() -> Path:
    """An empty database made once per process (`ovsdb-tool create`), copied for each instance: an experiment
    spread over dozens of instances spares a process each."""
    where = Path(tempfile.mkdtemp(prefix="cloudemu-ovsdb-"))
    atexit.register(shutil.rmtree, where, ignore_errors=True)
    _run(["ovsdb-tool", "create", str(where / "conf.db"), OVS_SCHEMA], dict(os.environ))
    return where / "conf.db"


def start_switch(base: Path, prefix: list[str] | None = None) -> list[int]:
    """ovs-vswitchd over the instance's database (started by `start`); returns its pid."""
    where = env(base)
    run, log = where["OVS_RUNDIR"], where["OVS_LOGDIR"]
    _run([*(prefix or []), "ovs-vswitchd", db(base), f"--pidfile={run}/ovs-vswitchd.pid", "--detach",
          f"--log-file={log}/ovs-vswitchd.log"], {**os.environ, **where})
    return [int(Path(run, f).read_text()) for f in ("ovsdb-server.pid", "ovs-vswitchd.pid")]


def pids(base: Path) -> list[int]:
    """The instance's daemons: every process naming its directory on the command line."""
    return processes.owned_by_marker(f"{base}/")


def running(base: Path) -> bool:
    return Path(env(base)["OVS_RUNDIR"], "db.sock").exists() and bool(pids(base))


def stop(base: Path) -> list[int]:
    """Ends both daemons at once (no clean-up pass over thousands of ports); returns pids that would not die.

    The directory stays for the caller to remove."""
    return processes.end(pids(base))


def appctl(rundir: str, commands: list[list[str]], daemon: str = "ovs-vswitchd", timeout: float = 10.0) -> list[str]:
    """Several `ovs-appctl` commands over one connection to the daemon's control socket (JSON-RPC),
    instead of a process each; returns each command's result, raises on the first error."""
    pid = Path(rundir, f"{daemon}.pid").read_text().strip()
    results: list[str] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(Path(rundir, f"{daemon}.{pid}.ctl")))
        sock.sendall("".join(json.dumps({"id": i, "method": cmd[0], "params": cmd[1:]})
                             for i, cmd in enumerate(commands)).encode())
        buffer, decoder = "", json.JSONDecoder()
        while len(results) < len(commands):
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"{daemon} closed its control socket")
            buffer += chunk.decode()
            while buffer.strip():
                try:
                    reply, end = decoder.raw_decode(buffer.lstrip())
                except ValueError:
                    break  # the rest has not arrived yet
                buffer = buffer.lstrip()[end:]
                if reply.get("error"):
                    raise RuntimeError(f"{commands[reply['id']][0]}: {str(reply['error']).strip()}")
                results.append(reply.get("result") or "")
    return results


def _run(argv: list[str], environment: dict[str, str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, env=environment, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:2])} failed: {proc.stderr.strip()[-300:]}")
