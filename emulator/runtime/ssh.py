"""One SSH session per machine (paramiko): verified host keys, retried connection set-up, counted round trips.

Commands are argument lists, quoted with shlex.join for the remote shell; never a
string built from user input. Only connecting is retried: a command that fails is
reported, because running it twice could do the work twice.
"""

from __future__ import annotations

import collections
import fcntl
import os
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko

from emulator.model import CloudemuError, Machine

CONNECT_TIMEOUT = 10.0
RETRIES = 3  # connection set-up only, with backoff 0.5 s, 1 s, 2 s


class MachineError(CloudemuError, RuntimeError):
    """A machine cannot be reached or refused us: names the machine and what to do."""

    exit_code = 2

    def __init__(self, machine: str, message: str):
        self.machine = machine
        super().__init__(f"machine {machine}: {message}")


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str


#: What one command may write to us: a worker's reply for a large shard is tens of MB; a runaway is cut off.
MAX_OUTPUT = 1 << 30


def default_known_hosts() -> Path:
    return Path.home() / ".ssh" / "known_hosts"


_known_hosts_guard = threading.Lock()


class AppendNewHostKey(paramiko.MissingHostKeyPolicy):
    """Trust on first use, as `ssh -o StrictHostKeyChecking=accept-new`: the new key is appended to the
    file, under a lock (threads of this process, and other processes through flock); the lines already there
    (comments, @revoked, @cert-authority, hashed names) are never rewritten."""

    def __init__(self, path: Path):
        self.path = path

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _known_hosts_guard, open(self.path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                fh.write(line)
                fh.flush()
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        client.get_host_keys().add(hostname, key.get_name(), key)


class Session:
    """An SSH connection to one machine, opened once and reused by every command."""

    def __init__(self, machine: Machine, *, known_hosts: str | Path | None = None, accept_new: bool = False):
        self.machine = machine
        self.known_hosts = Path(known_hosts).expanduser() if known_hosts else default_known_hosts()
        self.accept_new = accept_new
        self.round_trips = 0
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()

    # -- connection ----------------------------------------------------------
    def connect(self) -> Session:
        with self._lock:
            if self._client is not None and self._client.get_transport() and self._client.get_transport().is_active():
                return self
            delay, last = 0.5, None
            for attempt in range(RETRIES):
                try:
                    self._client = self._open()
                    return self
                except (OSError, EOFError, paramiko.SSHException) as exc:
                    if isinstance(exc, (paramiko.BadHostKeyException, paramiko.AuthenticationException)) or \
                            "not found in known_hosts" in str(exc):
                        raise self._explain(exc) from None
                    last = exc
                    if attempt < RETRIES - 1:
                        time.sleep(delay)
                        delay *= 2
            raise MachineError(self.machine.name, f"cannot reach {self.machine.address}:{self.machine.port} over SSH "
                                                  f"({last}); check that it is up and sshd runs") from None

    def _open(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        if self.known_hosts.exists():
            client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(AppendNewHostKey(self.known_hosts) if self.accept_new else paramiko.RejectPolicy())
        m = self.machine
        client.connect(m.address, port=m.port, username=m.user, key_filename=os.path.expanduser(m.key) if m.key else None,
                       look_for_keys=m.key is None, allow_agent=m.key is None, timeout=CONNECT_TIMEOUT,
                       banner_timeout=CONNECT_TIMEOUT, auth_timeout=CONNECT_TIMEOUT)
        self.round_trips += 1
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)
        return client

    def _explain(self, exc: Exception) -> MachineError:
        m = self.machine
        if isinstance(exc, paramiko.BadHostKeyException):
            return MachineError(m.name, f"the host key of {m.address} does not match {self.known_hosts}: the machine "
                                        "was reinstalled, or someone is in the middle; verify it before editing the file")
        if isinstance(exc, paramiko.AuthenticationException):
            return MachineError(m.name, f"{m.user}@{m.address} refused our key ({m.key or 'agent/default keys'}); add "
                                        "its public key to the machine's authorized_keys")
        return MachineError(m.name, f"the host key of {m.address} is not in {self.known_hosts}; verify it and add it "
                                    "(ssh-keyscan), or pass --accept-new-host-keys to trust it on first use")

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    @property
    def client(self) -> paramiko.SSHClient:
        self.connect()
        assert self._client is not None
        return self._client

    # -- commands --------------------------------------------------------------
    def run(self, argv: Sequence[str], *, input: bytes | str | None = None, timeout: float | None = 600,
            on_line: Callable[[str], None] | None = None) -> Completed:
        """Run `argv` on the machine; stdout lines go to `on_line` as they arrive, when given."""
        chan = self._channel()
        try:
            chan.exec_command(shlex.join(argv))
            if input is not None:
                chan.sendall(input.encode() if isinstance(input, str) else input)
            chan.shutdown_write()
            return _collect(chan, timeout, on_line, self.machine.name)
        finally:
            chan.close()

    def start(self, argv: Sequence[str]) -> paramiko.Channel:
        """Start `argv` on a pseudo-terminal: closing the channel hangs it up (a background server)."""
        chan = self._channel()
        chan.get_pty()
        chan.exec_command(shlex.join(argv))
        return chan

    def _channel(self) -> paramiko.Channel:
        try:
            transport = self.client.get_transport()
            if transport is None or not transport.is_active():
                raise paramiko.SSHException("connection lost")
            chan = transport.open_session(timeout=CONNECT_TIMEOUT)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise MachineError(self.machine.name, f"the SSH connection to {self.machine.address} dropped ({exc})") from None
        self.round_trips += 1
        return chan

    def put(self, data: bytes, path: str) -> None:
        """Write a file on the machine atomically (temporary name, then rename)."""
        self.round_trips += 1
        with self.client.open_sftp() as sftp:
            parent = os.path.dirname(path)
            if parent:
                _sftp_makedirs(sftp, parent)
            tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
            with sftp.open(tmp, "wb") as fh:
                fh.write(data)
            sftp.posix_rename(tmp, path)


def _sftp_makedirs(sftp: paramiko.SFTPClient, path: str) -> None:
    parts = path.split("/")
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        if not sub:
            continue
        try:
            sftp.stat(sub)
        except OSError:
            sftp.mkdir(sub)


def _collect(chan: paramiko.Channel, timeout: float | None, on_line: Callable[[str], None] | None,
             machine: str) -> Completed:
    out, err, pending = [], collections.deque(maxlen=64), b""  # stderr: its last 4 MB are what explain a failure
    size = 0
    deadline = time.monotonic() + timeout if timeout else None
    while True:
        busy = False
        if chan.recv_ready():
            data = chan.recv(65536)
            busy = True
            size += len(data)
            if size > MAX_OUTPUT:
                chan.close()
                raise MachineError(machine, f"a command wrote more than {MAX_OUTPUT >> 20} MB; stopped reading it")
            if on_line is not None:
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    on_line(line.decode(errors="replace"))
            out.append(data)
        if chan.recv_stderr_ready():
            err.append(chan.recv_stderr(65536))
            busy = True
        if deadline and time.monotonic() > deadline:  # a command that never stops writing is stopped too
            chan.close()
            raise MachineError(machine, f"a command did not finish within {timeout:.0f} s")
        if not busy:
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            if chan.closed or (chan.eof_received and chan.exit_status_ready()):
                break
            time.sleep(0.003)
    if on_line is not None and pending:
        on_line(pending.decode(errors="replace"))
    status = chan.recv_exit_status() if chan.exit_status_ready() else -1
    return Completed(status, b"".join(out).decode(errors="replace"), b"".join(err).decode(errors="replace"))
