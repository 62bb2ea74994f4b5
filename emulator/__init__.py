"""cloudemu: topologies in, running emulations out, and back out without a trace."""

from emulator.api import Emulation
from emulator.model import Topology, TopologyError
from emulator.topology.loader import load_file, load_text

__all__ = ["Emulation", "Topology", "TopologyError", "load_file", "load_text"]
__version__ = "0.1.0"
