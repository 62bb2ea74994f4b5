"""cloudemu: topologies in, running emulations out, and back out without a trace."""

from typing import Any

from emulator.model import Topology, TopologyError
from emulator.topology.imports import topology_from_networkx as from_networkx
from emulator.topology.loader import load_file, load_text

__all__ = ["Emulation", "Topology", "TopologyError", "from_networkx", "load_file", "load_text"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Emulation on first use: importing a provisioner alone must not drag in the runtime (an import cycle)."""
    if name == "Emulation":
        from emulator.api import Emulation

        return Emulation
    raise AttributeError(name)
