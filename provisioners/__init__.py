"""Engines that make a Plan real, by name."""

from __future__ import annotations

import importlib

from emulator.engines import ENGINES, INTERNAL
from emulator.model import UnknownName
from provisioners.base import NodeState, PreflightError, Provisioner

REGISTRY: dict[str, str] = {**ENGINES, **INTERNAL}  # emulator/engines.py lists them


def get(name: str, executor=None) -> Provisioner:
    if name not in REGISTRY:
        raise UnknownName(f"unknown provisioner {name!r}; known: {', '.join(REGISTRY)}")
    module, _, cls = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)(executor)


__all__ = ["REGISTRY", "NodeState", "PreflightError", "Provisioner", "get"]
