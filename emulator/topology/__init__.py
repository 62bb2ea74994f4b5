"""Loading topologies: the YAML format, generators, and imports from networkx and Mininet."""
