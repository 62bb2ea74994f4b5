"""Topology to Plan: names, addresses, link realization. Pure."""
