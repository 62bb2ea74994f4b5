"""Engines that make a Plan real, by name."""

from __future__ import annotations

import importlib

from provisioners.base import NodeState, PreflightError, Provisioner

REGISTRY: dict[str, str] = {
    "netns": "provisioners.netns:NetnsProvisioner",
    "docker": "provisioners.docker:DockerProvisioner",
    "lxd": "provisioners.lxd:LxdProvisioner",
    "mixed": "provisioners.mixed:MixedProvisioner",
}


def get(name: str, executor=None) -> Provisioner:
    if name not in REGISTRY:
        raise KeyError(f"unknown provisioner {name!r}; known: {', '.join(REGISTRY)}")
    module, _, cls = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)(executor)


__all__ = ["REGISTRY", "NodeState", "PreflightError", "Provisioner", "get"]
