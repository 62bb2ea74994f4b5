import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _ovs_running() -> bool:
    if not shutil.which("ovs-vsctl"):
        return False
    return subprocess.run(["ovs-vsctl", "--timeout=3", "show"], capture_output=True).returncode == 0


NEEDS_ROOT_OVS = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces"),
    pytest.mark.skipif(not _ovs_running(), reason="needs a running Open vSwitch (scripts/setup.sh)"),
]


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    """Each test gets its own journal directory, so tests never see each other's experiments."""
    d = tmp_path / "state"
    monkeypatch.setenv("CLOUDEMU_STATE_DIR", str(d))
    return d
