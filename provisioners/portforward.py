"""Publish a node's TCP port on its machine (`ports: ["8080:80"]`), for every engine alike.

Nodes live on emulated networks the machine's own namespace cannot route to, so a
port is published by a small forwarder process, as LXD's proxy device does: it
listens on the machine and, per connection, opens a socket inside the node's
network namespace to 127.0.0.1:<node port>. Each forwarder carries the experiment
on its command line (`--experiment=<exp>`), which is how `down` finds it; it is
ended by pid, never by name.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

MODULE = "provisioners.portforward"
DEFAULT_HOST = "127.0.0.1"  # this machine only, unless the topology names another address
#: Connections served at once per published port; one more is closed at once (a flood cannot exhaust our files).
MAX_CONNECTIONS = 256
log = logging.getLogger("cloudemu.portforward")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def socket_in(netns_fd: int, home_fd: int) -> socket.socket:
    """A TCP socket that belongs to the node's namespace (a socket keeps the namespace it was made in)."""
    _setns(netns_fd)
    try:
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    finally:
        _setns(home_fd)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def serve(listen_port: int, netns: str, node_port: int, host: str = DEFAULT_HOST,
                max_connections: int = MAX_CONNECTIONS) -> None:
    netns_fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    home_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    loop = asyncio.get_running_loop()
    open_now = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if open_now[0] >= max_connections:
            log.warning("refused %s: %d connections open already", peer, open_now[0])
            writer.close()
            return
        open_now[0] += 1
        try:
            sock = socket_in(netns_fd, home_fd)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, ("127.0.0.1", node_port))
            except OSError as exc:
                log.warning("%s: the node's port %d does not answer: %s", peer, node_port, exc)
                sock.close()
                writer.close()
                return
            node_reader, node_writer = await asyncio.open_connection(sock=sock)
            await asyncio.gather(_pipe(reader, node_writer), _pipe(node_reader, writer))
        except Exception:  # noqa: BLE001 - one connection's failure is logged, the forwarder goes on
            log.exception("%s: connection failed", peer)
            writer.close()
        finally:
            open_now[0] -= 1

    server = await asyncio.start_server(handle, host, listen_port, reuse_address=True)
    async with server:
        await server.serve_forever()


# -- the provisioner's side ------------------------------------------------------------
def log_dir(experiment: str) -> Path:
    from provisioners.computenodes import ROOT

    return ROOT / experiment / ".ports"


def start(experiment: str, netns: str, listen_port: int, node_port: int, host: str = DEFAULT_HOST) -> int:
    """Start a forwarder in its own session; wait until it listens. Returns its pid."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    logs = log_dir(experiment)
    logs.mkdir(parents=True, exist_ok=True, mode=0o700)
    proc = subprocess.Popen([sys.executable, "-m", MODULE, f"--experiment={experiment}", f"--netns={netns}",
                             f"--listen={listen_port}", f"--connect={node_port}", f"--host={host}",
                             f"--log={logs / f'{listen_port}.log'}"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True, env=env)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"publishing port {listen_port} failed: {proc.stderr.read().decode()[-300:]}")
        with socket.socket() as probe:
            if probe.connect_ex((host if host != "0.0.0.0" else "127.0.0.1", listen_port)) == 0:  # noqa: S104
                return proc.pid
        time.sleep(0.02)
    proc.kill()
    raise RuntimeError(f"publishing port {listen_port}: the forwarder did not listen within 10 s")


def pids_of(experiment: str) -> list[int]:
    """Forwarders whose command line names this experiment."""
    token = f"--experiment={experiment}".encode()
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            args = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if MODULE.encode() in args and token in args:
            out.append(int(p.name))
    return out


def stop(experiment: str) -> None:
    for pid in pids_of(experiment):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def port_free(port: int, host: str = DEFAULT_HOST) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def main() -> None:
    p = argparse.ArgumentParser(prog=MODULE)
    p.add_argument("--experiment", required=True)
    p.add_argument("--netns", required=True)
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--connect", type=int, required=True)
    p.add_argument("--host", default=DEFAULT_HOST, help="the machine's address to listen on (127.0.0.1: this machine only)")
    p.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS)
    p.add_argument("--log", help="where the forwarder writes its errors")
    a = p.parse_args()
    logging.basicConfig(filename=a.log, level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(serve(a.listen, a.netns, a.connect, a.host, a.max_connections))


if __name__ == "__main__":
    main()
