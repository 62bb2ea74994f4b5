"""Traffic between an emulation's VMs for integration tests: ping, and a TCP server that names who reached it."""

from __future__ import annotations

import subprocess

from emulator.api import Emulation

SERVE = ("import socket,sys\n"
         "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
         "s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(); print('ready', flush=True)\n"
         "while True:\n"
         "    c, peer = s.accept(); c.sendall(('hello ' + peer[0]).encode()); c.close()\n")
ASK = ("import socket,sys\n"
       "s=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2); print(s.recv(100).decode())\n")


def pings(emu: Emulation, src: str, ip: str, tries: int = 3, count: int = 1, wait: int = 1) -> bool:
    """True when `src` reaches `ip` within `tries` pings of `count` packets (one answer is enough), each answer
    awaited `wait` seconds."""
    return any(emu.node(src).run(["ping", "-c", str(count), "-W", str(wait), ip]).returncode == 0
               for _ in range(tries))


def serve_tcp(emu: Emulation, vm: str, port: int) -> subprocess.Popen:
    """A TCP server in `vm`, listening once this returns; it answers every connection with 'hello <peer address>'."""
    server = emu.node(vm).popen(["python3", "-c", SERVE, str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)
    assert server.stdout.readline().strip() == "ready"
    return server


def tcp_answer(emu: Emulation, src: str, ip: str, port: int) -> str:
    """What the server at ip:port says to `src`, or 'failed: ...'."""
    proc = emu.node(src).run(["python3", "-c", ASK, ip, str(port)], timeout=30)
    return proc.stdout.strip() if proc.returncode == 0 else f"failed: {proc.stderr.strip()[-200:]}"
