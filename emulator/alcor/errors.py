"""Errors of the Alcor layer, importable without gRPC (the CLI maps them to exit codes)."""

from emulator.model import CloudemuError


class AgentError(CloudemuError, RuntimeError):
    """An agent was unreachable, or refused or failed operations."""

    exit_code = 1
