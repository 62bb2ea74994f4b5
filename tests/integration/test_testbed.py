"""The testbed tells a running testbed from one a killed run left: only the first stops `up`."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.testbed import testbed


def test_a_testbed_is_alive_only_while_a_daemon_of_its_own_runs():
    daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", f"{testbed.RUN}/m9/db.sock"])
    try:
        state = {"machines": {"m9": {"pids": {"ovsdb-server": daemon.pid}}}}
        assert testbed.alive(state)
        stranger = {"machines": {"m9": {"pids": {"ovsdb-server": os.getpid()}}}}
        assert not testbed.alive(stranger)  # a pid reused by a process that is not the testbed's
    finally:
        daemon.kill()
        daemon.wait()
    assert not testbed.alive(state)
    assert not testbed.keeper_alive("m9", {"machines": {"m9": {"keeper": daemon.pid}}})
