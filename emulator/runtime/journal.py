"""The journal: what an experiment is about to create, written before it is created.

SQLite in WAL mode, one file per experiment. `down` reads it (with the
ownership markers) to remove exactly what `up` made, even after a crash.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulator.runtime.state import experiment_dir

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS resources (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    netns TEXT NOT NULL DEFAULT '',
    machine TEXT NOT NULL DEFAULT 'local',
    state TEXT NOT NULL DEFAULT 'planned',
    UNIQUE (kind, name, netns, machine)
);
"""


@dataclass(frozen=True)
class Resource:
    """One thing on a machine: a namespace, a bridge, a veth (named by one of its ends)."""

    kind: str
    name: str
    netns: str = ""
    machine: str = "local"


class Journal:
    def __init__(self, experiment: str, path: Path | None = None):
        self.experiment = experiment
        self.dir = path or experiment_dir(experiment)
        self.path = self.dir / "journal.sqlite"

    # -- lifecycle -------------------------------------------------------
    def exists(self) -> bool:
        return self.path.exists()

    def create(self, meta: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path.touch(mode=0o600)
        with self._db() as db:
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                           [(k, json.dumps(v)) for k, v in {**meta, "created": time.time()}.items()])

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before `up` goes on to make what it names. Containers, LXD instances and OVS
        # bridges outlive a reboot; a journal that lost its last transactions would forget them.
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
        return _Tx(db)

    # -- meta ------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        with self._db() as db:
            return {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}

    def set_meta(self, **values: Any) -> None:
        with self._db() as db:
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in values.items()])

    # -- resources -------------------------------------------------------
    def plan(self, resources: Iterable[Resource]) -> None:
        """Record resources as planned: called before they are created."""
        with self._db() as db:
            db.executemany("INSERT OR IGNORE INTO resources (kind, name, netns, machine) VALUES (?, ?, ?, ?)",
                           [(r.kind, r.name, r.netns, r.machine) for r in resources])

    def mark(self, resources: Iterable[Resource], state: str) -> None:
        with self._db() as db:
            db.executemany("UPDATE resources SET state = ? WHERE kind = ? AND name = ? AND netns = ? AND machine = ?",
                           [(state, r.kind, r.name, r.netns, r.machine) for r in resources])

    def resources(self, *, live_only: bool = True) -> list[Resource]:
        query = "SELECT kind, name, netns, machine FROM resources"
        if live_only:
            query += " WHERE state != 'removed'"
        with self._db() as db:
            return [Resource(*row) for row in db.execute(query + " ORDER BY seq")]

    def counts(self) -> dict[str, int]:
        with self._db() as db:
            return dict(db.execute("SELECT state, COUNT(*) FROM resources GROUP BY state").fetchall())


class _Tx:
    """A connection used as `with`: one transaction, then closed."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.db.close()
