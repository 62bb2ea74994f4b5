"""Where experiments live on disk, and the short tag each one gets."""

from __future__ import annotations

import fcntl
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from emulator.model import TAG_LEN, CloudemuError, check_experiment

STATE_ENV = "CLOUDEMU_STATE_DIR"


def state_dir() -> Path:
    env = os.environ.get(STATE_ENV)
    if env:
        path = Path(env)
    elif os.geteuid() == 0:
        path = Path("/var/lib/cloudemu")
    else:
        path = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local/state")) / "cloudemu"
    _private_dir(path)
    return path


def _private_dir(path: Path) -> None:
    """0700: journals hold the plan, and with it the nodes' `env` values (passwords, tokens)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)


def experiments_dir() -> Path:
    d = state_dir() / "experiments"
    _private_dir(d)
    return d


def experiment_dir(name: str) -> Path:
    return experiments_dir() / check_experiment(name)  # a name is never a path of its own


def known_experiments() -> list[str]:
    return sorted(p.name for p in experiments_dir().iterdir() if (p / "journal.sqlite").exists())


@contextmanager
def locked(name: str = ".lock") -> Iterator[None]:
    """An exclusive lock in the state directory (tag allocation, one up/down at a time per experiment)."""
    with open(state_dir() / name, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class ExperimentBusy(CloudemuError, RuntimeError):
    """Another process is bringing the experiment up or down."""

    exit_code = 2


class _ExperimentLock:
    """A flock on the experiment's lock file, re-entrant within this process (up's clean-up runs down while
    up still holds it; a second flock from the same process on a new descriptor would wait for itself)."""

    def __init__(self, path: Path):
        self.path, self.local, self.depth, self.fh = path, threading.RLock(), 0, None

    def acquire(self, wait: float | None, doing: str) -> None:
        if not self.local.acquire(timeout=-1 if wait is None else wait):
            raise ExperimentBusy(f"experiment {self.path.name[6:]!r} is busy in this process")
        if self.depth == 0:
            try:
                self._flock(wait, doing)
            except BaseException:
                self.local.release()
                raise
        self.depth += 1

    def _flock(self, wait: float | None, doing: str) -> None:
        fh = open(self.path, "a+")  # noqa: SIM115 - held until release
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    fh.seek(0)
                    holder = fh.read().strip() or "another process"
                    fh.close()
                    raise ExperimentBusy(f"experiment {self.path.name[6:]!r} is busy: {holder}; try again when it "
                                         "has finished ('cloudemu status' shows it)") from None
                time.sleep(0.05)
        fh.seek(0)
        fh.truncate()
        fh.write(f"{doing} by pid {os.getpid()}")
        fh.flush()
        self.fh = fh

    def release(self) -> None:
        self.depth -= 1
        if self.depth == 0:
            fh, self.fh = self.fh, None
            fh.truncate(0)
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()
        self.local.release()


_locks: dict[str, _ExperimentLock] = {}
_locks_guard = threading.Lock()


@contextmanager
def experiment_lock(name: str, *, wait: float | None = None, doing: str = "in use") -> Iterator[None]:
    """One holder per experiment, from the journal's creation to the end of `up`, and through `down`:
    `down` never deletes a journal while `up` is still creating what it names. `wait`: seconds to wait
    for the holder (None: as long as it takes; 0: refuse at once), then ExperimentBusy."""
    path = state_dir() / f".lock-{check_experiment(name)}"
    with _locks_guard:
        lock = _locks.setdefault(str(path), _ExperimentLock(path))
    lock.acquire(wait, doing)
    try:
        yield
    finally:
        lock.release()


def tag_candidates(experiment: str) -> Iterator[str]:
    """Readable first (smoke -> smo), then variations; all TAG_LEN long, unique among live experiments."""
    base = (re.sub(r"[^a-z0-9]", "", experiment.lower()) or "exp") + "xxx"
    yield base[:TAG_LEN]
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    for c in alphabet:
        yield base[: TAG_LEN - 1] + c
    for c1 in alphabet:
        for c2 in alphabet:
            yield base[: TAG_LEN - 2] + c1 + c2
    for c0 in alphabet[10:]:
        for c1 in alphabet:
            for c2 in alphabet:
                yield c0 + c1 + c2
