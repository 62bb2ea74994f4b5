"""Running system commands: argument lists only, batched where the tool allows it.

One executor per machine. This one runs locally; a remote one (SSH) offers the
same methods, so provisioners never care where they run.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence

from emulator.model import CloudemuError
from emulator.runtime import namespaces
from emulator.runtime.tokens import argv_words, batch_text


class CommandError(CloudemuError, RuntimeError):
    def __init__(self, argv: Sequence[str], returncode: int, stderr: str):
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"{' '.join(self.argv[:4])}{' ...' if len(self.argv) > 4 else ''} failed "
                         f"(exit {returncode}): {self.stderr[-800:]}")


#: Descriptors an `ip` process keeps for itself (stdio, netlink sockets, libc), below the open-files limit.
FD_MARGIN = 64


def within_open_files(lines: list[str], limit: int | None = None) -> list[list[str]]:
    """`ip -batch` keeps the descriptor of every namespace a line names (`... netns NAME`) open until it
    exits: a batch naming more than the open-files limit fails half-way ("Invalid netns value", at about
    10,000 veths under a limit of 20,000). Split so that no batch names more than the limit in force
    allows (the child inherits ours); `netns add/del` lines open none."""
    limit = limit if limit is not None else resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    budget = max(2, limit - FD_MARGIN)
    parts: list[list[str]] = [[]]
    used = 0
    for line in lines:
        refs = 0 if line.startswith("netns ") else line.count(" netns ")
        if parts[-1] and used + refs > budget:
            parts.append([])
            used = 0
        parts[-1].append(line)
        used += refs
    return [p for p in parts if p]


class LocalExecutor:
    """Runs commands on this machine."""

    machine = "local"

    def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True,
            timeout: float | None = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run(argv_words(argv), input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise CommandError(argv, proc.returncode, proc.stderr or proc.stdout)
        return proc

    def ip_batch(self, lines: Iterable[str], *, force: bool = False) -> None:
        """Many `ip` commands in one process; `force` goes on past errors (for removal)."""
        for part in within_open_files(list(lines)):
            text = batch_text(part, "ip")
            if text:
                self.run(["ip", *(["-force"] if force else []), "-batch", "-"], input=text, check=not force)

    def netns_add(self, names: list[str], on_done: Callable[[int], None] | None = None) -> None:
        """Named network namespaces, made without `ip netns add`'s remount of /run/netns before each one, which
        costs as much as the namespaces already there (emulator.runtime.namespaces)."""
        namespaces.add(names, self.ip_batch, on_done=on_done)

    def tc_batch(self, lines: Iterable[str]) -> None:
        text = batch_text(lines, "tc")
        if text:
            self.run(["tc", "-batch", "-"], input=text)

    def ovs_vsctl(self, commands: Sequence[Sequence[str]], *, timeout: int = 120, db: str | None = None,
                  wait: bool = True) -> str:
        """Several ovs-vsctl commands as one OVSDB transaction (on the OVS at `db`, else the machine's); without
        `wait`, done once the database has them (ovs-vswitchd may not run yet)."""
        if not commands:
            return ""
        argv = ["ovs-vsctl", f"--timeout={timeout}", *([f"--db={db}"] if db else []), *([] if wait else ["--no-wait"])]
        for cmd in commands:
            argv += ["--", *cmd]
        return self.run(argv, timeout=timeout + 10).stdout

    def which(self, program: str) -> str | None:
        return shutil.which(program)
