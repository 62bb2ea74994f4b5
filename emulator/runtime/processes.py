"""Ending processes we started, fast, even when they hold thousands of packet sockets.

A userspace OVS datapath reads every port through an AF_PACKET socket, and the kernel
waits one RCU grace period (about 13 ms here) when such a socket is closed. A dying
process closes its sockets one after another: an ovs-vswitchd with 1,000 ports takes
13 s to exit, and deleting its bridges costs the same. So before the kill we take a
duplicate of each packet socket (pidfd_getfd, Linux 5.6+, needs ptrace rights: root),
the process then exits at once, and our duplicates are closed from many threads, whose
grace periods overlap. Where the kernel refuses, the process is simply killed.
"""

from __future__ import annotations

import ctypes
import os
import platform
import resource
import select
import signal
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

#: pidfd_getfd's number is the same on every architecture that has it (the unified syscall table).
SYS_PIDFD_GETFD = 438
CLOSERS = 64


#: The programs cloudemu starts with a directory of its own on their command line (OVS daemons), and the
#: Python modules it runs so (a compute node's agent, a port forwarder).
OUR_PROGRAMS = frozenset({"ovsdb-server", "ovs-vswitchd"})
OUR_MODULES = frozenset({b"emulator.alcor.node", b"provisioners.portforward"})


def owned_by_marker(marker: str) -> list[int]:
    """Processes we started that name `marker` (a directory we made) in an argument: our ownership mark.

    Both must hold: an admin's `tail -f` of one of our logs names the directory too, and is not ours."""
    needle = marker.encode()
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if not any(needle in a for a in args[1:]):
                continue
            if _is_ours(os.path.basename(os.readlink(f"/proc/{pid}/exe")), args):
                out.append(int(pid))
        except OSError:
            continue
    return [p for p in out if p != os.getpid()]


def _is_ours(program: str, args: list[bytes]) -> bool:
    if program in OUR_PROGRAMS:
        return True
    if program.startswith("python"):
        return any(a == b"-m" and b in OUR_MODULES for a, b in zip(args, args[1:], strict=False))
    return False


def end(pids: Iterable[int], timeout: float = 30.0) -> list[int]:
    """SIGKILL each pid (ours: the caller checked), first taking over its packet sockets; returns the survivors."""
    pids = [p for p in pids if p != os.getpid()]
    held: list[int] = []
    for pid in pids:
        held += _take_packet_sockets(pid)
    waiters = {}
    for pid in pids:
        try:
            waiters[pid] = os.pidfd_open(pid)
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, OSError):
            continue
    deadline = time.monotonic() + timeout
    alive = []
    for pid, fd in waiters.items():
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)  # readable once the whole process has exited
            if not poller.poll(max(0, int((deadline - time.monotonic()) * 1000))):
                alive.append(pid)
        finally:
            os.close(fd)
    _close_many(held)
    return alive


def _take_packet_sockets(pid: int) -> list[int]:
    if platform.system() != "Linux":
        return []
    try:
        inodes = {line.split()[-1] for line in Path(f"/proc/{pid}/net/packet").read_text().splitlines()[1:]}
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    wanted = []
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            wanted.append(int(fd))
    if not wanted:
        return []
    _room_for(len(wanted))
    syscall = ctypes.CDLL(None, use_errno=True).syscall
    held = []
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return []
    try:
        for fd in wanted:
            dup = syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
            if dup < 0:
                break  # no such syscall, no rights, or out of descriptors: the kill does the rest
            held.append(dup)
    finally:
        os.close(pidfd)
    return held


def _room_for(extra: int) -> None:
    """Raise our soft descriptor limit to the hard one when the duplicates might not fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard and soft < extra + 1024:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _close_many(fds: list[int]) -> None:
    if not fds:
        return
    with ThreadPoolExecutor(max_workers=min(CLOSERS, len(fds)), thread_name_prefix="close") as pool:
        list(pool.map(os.close, fds))


def log_to(path: Path | None, level: int) -> None:
    """One of our long-running programs (an agent, a pack of hollow nodes): its output and errors into `path`
    (private to root) when given, and its log records on them."""
    import logging
    import sys

    if path is not None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)


def run_async(coro):
    """asyncio.run on uvloop's event loop (libuv): for the gRPC packs and load client, where the loop's own
    work is a fifth of a call's CPU (4,000 calls: 0.29 -> 0.24 ms of the client each, 0.32 -> 0.26 ms of the
    pack). Plain asyncio when uvloop is not installed."""
    import asyncio

    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)
