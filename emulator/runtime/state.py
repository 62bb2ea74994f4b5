"""Where experiments live on disk, and the short tag each one gets."""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from emulator.model import TAG_LEN, check_experiment

STATE_ENV = "CLOUDEMU_STATE_DIR"


def state_dir() -> Path:
    env = os.environ.get(STATE_ENV)
    if env:
        path = Path(env)
    elif os.geteuid() == 0:
        path = Path("/var/lib/cloudemu")
    else:
        path = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local/state")) / "cloudemu"
    path.mkdir(parents=True, exist_ok=True)
    return path


def experiments_dir() -> Path:
    d = state_dir() / "experiments"
    d.mkdir(exist_ok=True)
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
