"""Golden error files: each bad topology states the error it must produce on its first line."""

import ipaddress
import re
from pathlib import Path

import pytest

from emulator.compiler.compile import compile_topology
from emulator.model import TopologyError
from emulator.topology.loader import load_file

ERRORS = Path(__file__).resolve().parent.parent / "golden" / "errors"
HOST_ROUTES = [(ipaddress.ip_network("192.0.2.0/24"), "dev eth0")]


def expectation(path: Path) -> tuple[int | None, str]:
    m = re.match(r"# expect: (\d*): (.*)$", path.read_text().splitlines()[0])
    assert m, f"{path.name} lacks its '# expect: LINE: TEXT' header"
    return (int(m.group(1)) if m.group(1) else None), m.group(2)


@pytest.mark.parametrize("path", sorted(ERRORS.glob("*.yaml")), ids=lambda p: p.stem)
def test_bad_file_gives_its_error(path):
    line, text = expectation(path)
    with pytest.raises(TopologyError) as info:
        compile_topology(load_file(path), reserved=HOST_ROUTES)
    err = info.value
    assert err.where.file == str(path)
    if line is not None:
        assert err.where.line == line, str(err)
    assert text in str(err), str(err)
    assert err.exit_code == 2


def test_missing_file_is_named():
    with pytest.raises(TopologyError, match="no such file"):
        load_file("/nonexistent/topo.yaml")
