"""An LXD cluster seen through its API from the controller: members and their state, the experiment's instances on
every member, the node image imported once. Each machine's worker creates its own instances through its member's
socket (the same cluster API) with the member as `target`; this is the view across members."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulator.model import CloudemuError, Cluster, LxdCluster
from provisioners import lxd as lxd_engine

TIMEOUT = 30


class LxdClusterError(CloudemuError, RuntimeError):
    pass


def client(lxd: LxdCluster, endpoint: str | None = None):
    """A client of the cluster (or of one member, at `endpoint`) that pins the cluster's certificate, as lxc pins a
    remote's. The environment's CA bundle (REQUESTS_CA_BUNDLE) is not consulted: it would replace the pin."""
    import pylxd
    import pylxd.client

    try:
        if lxd.socket and not endpoint:
            return pylxd.Client(endpoint=lxd.socket, timeout=TIMEOUT)
        url = endpoint or lxd.endpoint
        cert = (str(Path(lxd.cert).expanduser()), str(Path(lxd.key).expanduser()))
        verify = str(Path(lxd.server_cert).expanduser())
        session = pylxd.client.get_session_for_url(url, verify=verify, cert=cert)
        session.trust_env = False
        made = pylxd.Client(endpoint=url, cert=cert, verify=verify, timeout=TIMEOUT, session=session)
    except Exception as exc:  # pylxd raises several kinds for "cannot reach it"
        raise LxdClusterError(f"LXD cluster at {endpoint or lxd.endpoint or lxd.socket} is not reachable: "
                              f"{_short(exc)}; check the inventory's lxd: and 'cloudemu doctor --cluster'") from None
    if not made.trusted:
        raise LxdClusterError(f"LXD cluster at {endpoint or lxd.endpoint} does not trust {lxd.cert}: on a member, "
                              f"'lxc config trust add {lxd.cert}'")
    return made


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 300 else text[:300] + "..."


@dataclass
class Member:
    name: str
    url: str
    status: str  # Online, Offline, Evacuated, ...
    message: str

    @property
    def online(self) -> bool:
        return self.status.lower() == "online"


def _listed(listing, api):
    """A collection listed by the LXD engine's one-request listing, its failure an LxdClusterError."""
    import pylxd.exceptions

    try:
        found = listing(api)
    except (pylxd.exceptions.LXDAPIException, OSError, ValueError) as exc:
        raise LxdClusterError(f"LXD cluster: listing {listing.__name__} failed: {_short(exc)}") from None
    return found


def members(api) -> dict[str, Member]:
    return {name: Member(name, m["url"], m["status"], m["message"]) for name, m in _listed(lxd_engine.members, api).items()}


def instances_of(api, experiment: str, names: set[str] = frozenset()) -> dict[str, str]:
    """The experiment's instances on every member: name -> member. Those of an offline member have no config to
    read (the cluster knows only their name and place): they are the experiment's if `names` (the plan's) has them."""
    return {i["name"]: i["location"] for i in _listed(lxd_engine.instances, api)
            if lxd_engine.owner(i) == experiment or (i.get("config") is None and i["name"] in names)}


def sweep(lxd: LxdCluster, experiment: str, names: set[str]) -> tuple[int, dict[str, tuple[str, str]]]:
    """After each machine removed its own: what still carries the experiment's marker anywhere (or, on an offline
    member, one of its `names`) is removed where its member is online. Returns (removed, {instance: (member, why
    it is left)})."""
    import pylxd.exceptions

    api = client(lxd)
    state = members(api)
    removed, left = 0, {}
    for name, member in instances_of(api, experiment, names).items():
        if member in state and not state[member].online:
            left[name] = (member, f"on {member}, which is {state[member].status.lower()}")
            continue
        try:
            # once: an error here is most often a member the cluster has not yet marked offline, and each try may
            # wait on it; what is left is reported, and the next `down` tries again
            removed += lxd_engine.remove_instance(api, name, tries=1)
        except pylxd.exceptions.LXDAPIException as exc:
            left[name] = (member, f"on {member}: {_short(exc)}")
    return removed, left


def doctor(cluster: Cluster, image_alias: str) -> list[dict[str, Any]]:
    """One row per member: online, reachable here with the trusted certificate, its version, its storage pool, and
    whether the node image is in the cluster; a machine that is not a member is a problem of its own."""
    lxd = cluster.lxd
    try:
        api = client(lxd)
    except LxdClusterError as exc:
        return [{"member": "(cluster)", "ok": False, "problems": [str(exc)]}]
    state = members(api)
    image = api.images.exists(image_alias, alias=True)
    replicas = api.host_info["config"].get("cluster.images_minimal_replica", "3")

    def check(member: Member) -> dict[str, Any]:
        problems = [] if member.online else [f"{member.status.lower()}: {member.message}"]
        version = pool = None
        if member.online and lxd.endpoint:
            try:
                one = client(lxd, endpoint=member.url)
                version = one.host_info["environment"]["server_version"]
                pool = "default" if one.storage_pools.exists("default") else None
            except LxdClusterError as exc:
                problems.append(str(exc))
        if member.online and pool is None and lxd.endpoint:
            problems.append("no storage pool 'default': instances cannot be made there")
        if not image:
            problems.append(f"image {image_alias} is not in the cluster: 'cloudemu image build --engine lxd "
                            "--cluster INVENTORY' imports it once")
        return {"member": member.name, "url": member.url, "ok": not problems, "problems": problems,
                "status": member.status, "version": version, "image": image, "image_replicas": replicas}

    with ThreadPoolExecutor(max_workers=8) as pool:
        rows = list(pool.map(check, state.values()))
    rows += [{"member": m.name, "ok": False, "problems": [f"machine {m.name} is not a member of the LXD cluster "
                                                          f"(members: {', '.join(sorted(state))})"]}
             for m in cluster.machines if m.name not in state]
    return rows

