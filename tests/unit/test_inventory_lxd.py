"""The inventory's lxd: section: an LXD cluster whose members are the machines."""

from __future__ import annotations

import pytest

from emulator.model import TopologyError
from emulator.runtime.distributed import cluster_from_dict, cluster_to_dict
from emulator.topology.cluster import load_cluster

BASE = "version: 1\nmachines:\n  m1: {address: 10.1.0.1}\n  m2: {address: 10.1.0.2}\n"


def inventory(tmp_path, lxd: str):
    path = tmp_path / "lab" / "cluster.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(BASE + lxd)
    return path


def test_endpoint_and_certificates_relative_to_the_inventory(tmp_path):
    path = inventory(tmp_path, "lxd: {endpoint: 'https://10.1.0.1:8443', cert: c.crt, key: /abs/c.key, "
                               "server_cert: s.crt}\n")
    lxd = load_cluster(path).lxd
    assert lxd.endpoint == "https://10.1.0.1:8443"
    assert lxd.cert == str(path.parent / "c.crt") and lxd.key == "/abs/c.key"
    assert lxd.server_cert == str(path.parent / "s.crt")


def test_a_member_socket_is_enough(tmp_path):
    assert load_cluster(inventory(tmp_path, "lxd: {socket: /var/lib/lxd/unix.socket}\n")).lxd.socket == \
        "/var/lib/lxd/unix.socket"


def test_no_lxd_section_no_cluster(tmp_path):
    assert load_cluster(inventory(tmp_path, "")).lxd is None


@pytest.mark.parametrize("lxd, field, says", [
    ("lxd: {endpoint: 'http://10.1.0.1:8443', cert: a, key: b, server_cert: c}", "lxd.endpoint", "https://HOST:PORT"),
    ("lxd: {endpoint: 'https://10.1.0.1:8443;rm', cert: a, key: b, server_cert: c}", "lxd.endpoint", "https://"),
    ("lxd: {endpoint: 'https://10.1.0.1:8443', cert: a, key: b}", "lxd.server_cert", "pin"),
    ("lxd: {cert: a}", "lxd.endpoint", "socket"),
    ("lxd: {endpoint: 'https://10.1.0.1:8443', cert: 3, key: b, server_cert: c}", "lxd.cert", "a path"),
    ("lxd: {endpoint: 'https://10.1.0.1:8443', cert: a, key: b, server_cert: c, password: x}", "lxd.password", ""),
    ("lxd: [https://10.1.0.1:8443]", "lxd", "mapping"),
])
def test_bad_lxd_section_names_line_and_field(tmp_path, lxd, field, says):
    path = inventory(tmp_path, lxd + "\n")
    with pytest.raises(TopologyError) as info:
        load_cluster(path)
    assert info.value.field == field and says in str(info.value)
    assert f"{path}:5" in str(info.value)  # the lxd: line


def test_the_cluster_survives_the_journal(tmp_path):
    cluster = load_cluster(inventory(tmp_path, "lxd: {socket: /s}\n"))
    assert cluster_from_dict(cluster_to_dict(cluster)).lxd == cluster.lxd
    plain = load_cluster(inventory(tmp_path, ""))
    assert cluster_from_dict(cluster_to_dict(plain)).lxd is None
