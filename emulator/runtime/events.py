"""Phases with timings, and progress for whoever is watching (rich in the CLI, nothing in the API)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class ProgressSink(Protocol):
    def start(self, phase: str, total: int) -> None: ...
    def advance(self, phase: str, amount: int) -> None: ...
    def finish(self, phase: str, seconds: float) -> None: ...


class _Quiet:
    def start(self, phase: str, total: int) -> None:
        pass

    def advance(self, phase: str, amount: int) -> None:
        pass

    def finish(self, phase: str, seconds: float) -> None:
        pass


class Step:
    def __init__(self, phases: Phases, name: str):
        self.phases, self.name = phases, name

    def advance(self, amount: int = 1) -> None:
        self.phases.sink.advance(self.name, amount)


class Phases:
    """Times each named phase of a run; the summary is what `up` prints at the end."""

    def __init__(self, sink: ProgressSink | None = None):
        self.sink = sink or _Quiet()
        self.timings: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str, total: int = 0) -> Iterator[Step]:
        self.sink.start(name, total)
        t0 = time.perf_counter()
        try:
            yield Step(self, name)
        finally:
            seconds = time.perf_counter() - t0
            self.timings[name] = self.timings.get(name, 0.0) + seconds
            self.sink.finish(name, seconds)

    @property
    def total(self) -> float:
        return sum(self.timings.values())
