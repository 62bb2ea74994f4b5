"""Talking to the machines of a cluster: one SSH session each, the shipped worker, bounded parallelism.

A request is a few round trips per machine whatever the node count: the worker
gets the machine's whole shard at once and streams progress back as JSON lines.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from emulator.model import CloudemuError, Cluster, Machine
from emulator.runtime.bundle import remote_path, runner_zip
from emulator.runtime.ssh import MachineError, Session


class WorkerError(CloudemuError, RuntimeError):
    """The worker on a machine ran and refused or failed: names the machine and the cause."""

    def __init__(self, machine: str, kind: str, message: str, trace: str = ""):
        self.machine, self.kind, self.trace = machine, kind, trace
        self.exit_code = 2 if kind in ("preflight", "experiment", "usage") else 1
        super().__init__(f"machine {machine}: {message}")


EventHandler = Callable[[str, dict[str, Any]], None]


class Workers:
    """The cluster's machines, reachable by name; sessions open on first use and are reused."""

    def __init__(self, cluster: Cluster, *, accept_new: bool = False, parallel: int = 16):
        self.cluster = cluster
        self.machines: dict[str, Machine] = {m.name: m for m in cluster.machines}
        self.parallel = max(1, parallel)
        self._sessions: dict[str, Session] = {}
        self._shipped: set[str] = set()
        self._lock = threading.Lock()
        self.accept_new = accept_new

    def session(self, name: str) -> Session:
        with self._lock:
            if name not in self._sessions:
                self._sessions[name] = Session(self.machines[name], known_hosts=self.cluster.known_hosts,
                                               accept_new=self.accept_new)
            return self._sessions[name]

    def round_trips(self) -> dict[str, int]:
        return {name: s.round_trips for name, s in self._sessions.items()}

    def close(self) -> None:
        for s in self._sessions.values():
            s.close()

    # -- one machine -----------------------------------------------------------
    def call(self, name: str, request: dict[str, Any], on_event: EventHandler | None = None,
             timeout: float = 3600) -> dict[str, Any]:
        """Run one worker request on machine `name`; its result, or WorkerError / MachineError."""
        session = self.session(name).connect()
        data, digest = runner_zip()
        argv = [self.machines[name].python, remote_path(digest)]
        body = json.dumps(request)
        for attempt in (1, 2):
            events: list[dict[str, Any]] = []

            def line(text: str, events=events) -> None:
                if not text.startswith("{"):
                    return
                try:
                    ev = json.loads(text)
                except ValueError:
                    return
                events.append(ev) if ev.get("ev") in ("result", "error") else None
                if on_event and ev.get("ev") in ("start", "advance", "finish"):
                    on_event(name, ev)

            done = session.run(argv, input=body, timeout=timeout, on_line=line)
            final = events[-1] if events else None
            if final is None and attempt == 1 and "can't open file" in done.stderr:
                session.put(data, remote_path(digest))  # first use of this version on the machine
                continue
            if final is None:
                if done.returncode == -1:
                    raise MachineError(name, f"the connection dropped during '{request.get('command')}'")
                raise WorkerError(name, "failure", f"the worker did not answer (exit {done.returncode}): "
                                                   f"{done.stderr.strip()[-600:]}")
            if final["ev"] == "error":
                raise WorkerError(name, final.get("kind", "failure"), final.get("message", "?"), final.get("trace", ""))
            return {k: v for k, v in final.items() if k != "ev"}
        raise AssertionError("unreachable")

    # -- many machines ---------------------------------------------------------
    def each(self, names: Iterable[str], request_of: Callable[[str], dict[str, Any]],
             on_event: EventHandler | None = None, stop_on_error: bool = False) -> dict[str, Any]:
        """The same kind of request on many machines, `parallel` at a time: name -> result or the exception.

        With `stop_on_error`, machines not yet started when one fails are skipped (absent from the result)."""
        failed = threading.Event()
        out: dict[str, Any] = {}

        def one(name: str) -> None:
            if stop_on_error and failed.is_set():
                return
            try:
                out[name] = self.call(name, request_of(name), on_event)
            except (MachineError, WorkerError) as exc:
                out[name] = exc
                failed.set()

        with ThreadPoolExecutor(self.parallel) as pool:
            list(pool.map(one, list(names)))
        return out


def errors_of(results: dict[str, Any]) -> dict[str, Exception]:
    return {name: r for name, r in results.items() if isinstance(r, Exception)}
