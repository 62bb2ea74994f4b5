"""Engines that make a Plan real, by name."""

from __future__ import annotations

import importlib

from emulator.engines import ENGINES, LEGACY
from emulator.model import UnknownName
from provisioners.base import NodeState, PreflightError, Provisioner


def get(name: str, executor=None) -> Provisioner:
    """The Deployer, with every engine of emulator/engines.py (a plan's provisioner name is only a label now)."""
    if name not in ENGINES and name not in LEGACY:
        raise UnknownName(f"unknown provisioner {name!r}; known: {', '.join([*ENGINES, *LEGACY])}")
    return importlib.import_module("provisioners.deployer").Deployer(executor)


__all__ = ["NodeState", "PreflightError", "Provisioner", "get"]
