"""The machine side of the Alcor layer: what a cluster worker does for it (`goalstates`)."""

from __future__ import annotations

import base64
from typing import Any

from emulator.alcor.controller import push_all
from emulator.alcor.schema import goalstate_pb2


def goalstates(req: dict[str, Any]) -> dict[str, Any]:
    """Goal states for this machine's compute nodes, pushed to their agents' local sockets (one request per machine)."""
    messages = {host: [goalstate_pb2.GoalStateV2.FromString(base64.b64decode(m)) for m in msgs]
                for host, msgs in req["messages"].items()}
    pushed = push_all(req["targets"], messages)
    return {"pushed": [{"host": p.host, "seconds": p.seconds, "agent_us": p.agent_us, "failed": p.failed}
                       for p in pushed]}
