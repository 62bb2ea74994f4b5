"""The machine side of the Alcor layer: what a cluster worker does for it (`goalstates`, `hollow`)."""

from __future__ import annotations

import base64
from typing import Any

from emulator.alcor.controller import push_each


def goalstates(req: dict[str, Any]) -> dict[str, Any]:
    """Goal states for this machine's compute nodes (full or hollow), pushed as they came to their agents' local
    sockets, a connection per agent (one request per machine)."""
    messages = {host: [(lambda raw=base64.b64decode(m): raw) for m in msgs] for host, msgs in req["messages"].items()}
    pushed = push_each(req["targets"], messages)
    return {"pushed": [{"host": p.host, "seconds": p.seconds, "agent_us": p.agent_us, "failed": p.failed,
                        "pending": p.pending} for p in pushed]}


def ask_packs(plan, requests: dict[str, dict]) -> dict[str, dict | Exception]:
    """Packs of hollow compute nodes on this machine, each asked over its control socket."""
    from provisioners.kinds import hollow

    nodes = {n.name: n for n in plan.nodes if "hollow" in n.options}
    out: dict[str, dict | Exception] = {}
    for pack, request in requests.items():
        try:
            out[pack] = hollow.ask(nodes[pack], request)
        except KeyError:
            out[pack] = OSError(f"{pack} is not a pack of hollow compute nodes of {plan.experiment}")
        except (OSError, ValueError) as exc:
            out[pack] = OSError(f"{pack} does not answer: {exc}")
    return out


def hollow(req: dict[str, Any]) -> dict[str, Any]:
    """This machine's packs of an experiment, each asked what the controller asks (state, summary, delays)."""
    from emulator.runtime import orchestrator

    answers = ask_packs(orchestrator.load_plan(req["experiment"]), req["requests"])
    return {"answers": {p: ({"unreachable": str(a)} if isinstance(a, Exception) else a) for p, a in answers.items()}}
