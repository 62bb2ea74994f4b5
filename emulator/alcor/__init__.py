"""Alcor roles: compute nodes running a goal-state agent, VMs as namespaces, services, the test controller."""
