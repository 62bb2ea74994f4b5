"""Services on Docker: started in dependency order, each once its dependencies are healthy; health in status."""

import pytest
import yaml

from emulator.api import Emulation
from emulator.topology.loader import load_text
from provisioners.base import NodeStartError
from tests.conftest import NEEDS_ROOT_OVS, leftovers

pytestmark = NEEDS_ROOT_OVS
IMAGE = "cloudemu/node:1"


def topology(name: str, db_command: str) -> str:
    wait_for_db = ("python3 -c 'import urllib.request; urllib.request.urlopen(\"http://10.83.0.10:8000/\", timeout=2)'"
                   " && touch /tmp/db-was-up; exec python3 -m http.server 9000")
    doc = {
        "version": 1, "name": name, "defaults": {"subnet": "10.83.0.0/24"},
        "nodes": {
            "s1": {"kind": "switch"},
            "db": {"kind": "service", "image": IMAGE, "ip": "10.83.0.10/24", "command": db_command,
                   "healthcheck": {"http": "/", "port": 8000, "timeout": 8}},
            "api": {"kind": "service", "image": IMAGE, "ip": "10.83.0.11/24", "depends_on": ["db"],
                    "command": wait_for_db, "healthcheck": {"tcp": 9000}},
            "worker": {"kind": "service", "image": IMAGE, "depends_on": ["api"],
                       "command": "touch /tmp/ready; exec sleep infinity", "healthcheck": {"command": "test -f /tmp/ready"}},
        },
        "links": [{"endpoints": [n, "s1"]} for n in ("db", "api", "worker")],
    }
    return yaml.safe_dump(doc, sort_keys=False)


def test_services_start_in_dependency_order_once_healthy(state_dir):
    name = "svc_order"
    emu = Emulation(load_text(topology(name, "sleep 2; exec python3 -m http.server 8000"))).up()
    try:
        # api's command asked db for / as it started: db was serving by then, though db sleeps first
        assert emu.node("api").run(["test", "-f", "/tmp/db-was-up"]).returncode == 0
        states = {s.node: s for s in emu.status()}
        for svc in ("db", "api", "worker"):
            assert (states[svc].kind, states[svc].state) == ("service", "running")
            assert "healthy" in states[svc].detail and "unhealthy" not in states[svc].detail
        emu.node("api").run(["sh", "-c", "kill $(pgrep -f 'http.server 9000')"])
        states = {s.node: s for s in emu.status()}
        assert states["api"].state == "unhealthy" and "refused" in states["api"].detail
    finally:
        result = emu.down()
    assert result.clean and leftovers(name) == {}


def test_a_service_that_never_gets_healthy_stops_up_and_leaves_nothing(state_dir):
    name = "svc_sick"
    emu = Emulation(load_text(topology(name, "exec sleep infinity")))  # db never listens
    with pytest.raises(NodeStartError, match="service db is not healthy after 8 s .*the services that depend on it"):
        emu.up()
    assert leftovers(name) == {}
