"""Named namespaces made without `ip netns add` for each (emulator.runtime.namespaces): real ones, usable by `ip`."""

import os
import subprocess

import pytest

from emulator.runtime import namespaces
from emulator.runtime.executor import LocalExecutor
from emulator.runtime.tokens import UnsafeToken
from tests.conftest import NEEDS_ROOT_OVS

pytestmark = NEEDS_ROOT_OVS
PREFIX = f"cetest{os.getpid()}."


def _delete(names: list[str]) -> None:
    subprocess.run(["ip", "-force", "-batch", "-"], input="".join(f"netns del {n}\n" for n in names), text=True)


def test_namespaces_are_distinct_named_and_usable_by_ip():
    names = [f"{PREFIX}{i}" for i in range(7)]
    home = os.stat("/proc/self/ns/net").st_ino
    done: list[int] = []
    try:
        namespaces.add(names, LocalExecutor().ip_batch, workers=3, on_done=done.append)
        assert set(names) <= set(os.listdir("/run/netns"))
        inodes = {os.stat(f"/run/netns/{n}").st_ino for n in names}
        assert len(inodes) == len(names) and home not in inodes  # each its own, none the caller's
        assert os.stat("/proc/self/ns/net").st_ino == home  # this thread stayed where it was
        assert sum(done) == len(names)
        out = subprocess.run(["ip", "netns", "exec", names[-1], "ip", "-o", "link"], capture_output=True,
                             text=True, check=True).stdout
        assert out.count("\n") == 1 and ": lo:" in out  # a fresh namespace: loopback only
    finally:
        _delete(names)
    assert not set(names) & set(os.listdir("/run/netns"))


def test_an_existing_name_fails_and_a_bad_one_is_refused():
    names = [f"{PREFIX}a", f"{PREFIX}b"]
    try:
        namespaces.add(names, LocalExecutor().ip_batch)
        with pytest.raises(FileExistsError):
            namespaces.add([f"{PREFIX}c", names[1]], LocalExecutor().ip_batch)
        with pytest.raises(UnsafeToken):
            namespaces.add([f"{PREFIX}d", "../../etc/x"], LocalExecutor().ip_batch)
        assert f"{PREFIX}d" not in os.listdir("/run/netns")  # refused before anything was made
    finally:
        _delete([*names, f"{PREFIX}c"])
