"""The node image, built without a registry: debootstrap from the Debian mirror, imported into the engines.

No registry is reachable from these machines (and many research clusters are
air-gapped), so the image is made from the distribution mirror apt already uses.
The root file system is cached, keyed by suite, mirror and package list: a second
build only re-imports it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from emulator.compiler.plan import DEFAULT_IMAGE
from provisioners.base import PreflightError

SUITE = "bookworm"
PACKAGES = ("openvswitch-switch", "iproute2", "python3", "iputils-ping", "iperf3", "procps", "udhcpc")
CACHE = Path(os.environ.get("CLOUDEMU_CACHE", "/var/cache/cloudemu"))
LABEL = "cloudemu-image"


def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 .sources first, then sources.list)."""
    candidates = sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + [Path("/etc/apt/sources.list")]
    for path in candidates:
        try:
            text = path.read_text()
        except OSError:
            continue
        for m in re.finditer(r"^URIs:\s*(\S+)", text, re.M):
            if "security" not in m.group(1):
                return m.group(1)
        for m in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+", text, re.M):
            if "security" not in m.group(1):
                return m.group(1)
    return "http://deb.debian.org/debian"


def rootfs_key(mirror: str) -> str:
    return hashlib.sha256(f"{SUITE} {mirror} {' '.join(PACKAGES)}".encode()).hexdigest()[:12]


def build_rootfs(log: Callable[[str], None] = print) -> Path:
    """The cached root file system, made by debootstrap on first use (about a minute, 300 MB)."""
    mirror = apt_mirror()
    target = CACHE / f"rootfs-{SUITE}-{rootfs_key(mirror)}"
    if (target / "etc" / "debian_version").exists():
        log(f"root file system: cached in {target}")
        return target
    if not shutil.which("debootstrap"):
        raise PreflightError("debootstrap is missing: apt-get install debootstrap (or run scripts/setup.sh)")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    log(f"root file system: debootstrap {SUITE} from {mirror} into {target} (about a minute)")
    cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(staging), mirror]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=DEBOOTSTRAP_TIMEOUT)
    except subprocess.TimeoutExpired:
        shutil.rmtree(staging, ignore_errors=True)
        raise PreflightError(f"debootstrap did not finish within {DEBOOTSTRAP_TIMEOUT} s: is the mirror {mirror} "
                             "reachable?") from None
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise PreflightError(f"debootstrap failed ({proc.returncode}):\n{tail}")
    shutil.rmtree(staging / "var" / "cache" / "apt" / "archives", ignore_errors=True)
    staging.rename(target)
    return target


DEBOOTSTRAP_TIMEOUT = 1800  # about a minute here; a slow mirror gets half an hour, a dead one an error
LXD_TIMEOUT = 120  # seconds per LXD API call: an LXD that stops answering ends in an error, not a hang


def rootfs_tarball(rootfs: Path) -> Path:
    tarball = rootfs.with_suffix(".tar")
    if not tarball.exists():
        partial = tarball.with_suffix(".tar.partial")
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."], check=True, timeout=600)
        partial.rename(tarball)
    return tarball


def docker_client():
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
        return client
    except Exception as exc:  # the SDK raises several kinds for "no daemon"
        raise PreflightError(f"the Docker engine is not reachable ({exc.__class__.__name__}); start dockerd "
                             "(scripts/setup.sh does) or set DOCKER_HOST") from None


def import_docker(rootfs: Path, image: str = DEFAULT_IMAGE) -> str:
    repository, _, tag = image.partition(":")
    client = docker_client()
    present = [i for i in client.images.list(filters={"label": f"{LABEL}={rootfs.name}"}) if image in i.tags]
    if present:  # already made from this very root file system
        return present[0].id
    client.api.import_image_from_file(str(rootfs_tarball(rootfs)), repository=repository, tag=tag or "latest",
                                      changes=[f"LABEL {LABEL}={rootfs.name}", 'CMD ["sleep", "infinity"]'])
    return client.images.get(image).id


def docker_images() -> list[dict[str, str]]:
    client = docker_client()
    out = []
    for img in client.images.list(filters={"label": LABEL}):
        for tag in img.tags:
            out.append({"engine": "docker", "image": tag, "id": img.short_id, "rootfs": img.labels.get(LABEL, ""),
                        "size_mb": str(round(img.attrs.get("Size", 0) / 1e6))})
    return out


def docker_has(image: str) -> bool:
    import docker.errors

    try:
        docker_client().images.get(image)
        return True
    except docker.errors.ImageNotFound:
        return False


# -- LXD ---------------------------------------------------------------------------
def lxd_alias(image: str) -> str:
    """LXD aliases cannot hold ':' (it separates the remote): cloudemu/node:1 -> cloudemu/node-1."""
    return image.replace(":", "-")


def lxd_client():
    import pylxd

    try:
        client = pylxd.Client(timeout=LXD_TIMEOUT)
        client.host_info  # noqa: B018 - a round trip: is the daemon there
        return client
    except Exception as exc:  # pylxd raises several kinds for "no daemon"
        raise PreflightError(f"LXD is not reachable ({exc.__class__.__name__}); start it with 'lxd --group root' and "
                             "'lxd init --preseed' (scripts/setup.sh does)") from None


def lxd_metadata(rootfs: Path) -> bytes:
    """The metadata tarball LXD wants beside a root file system."""
    import io
    import tarfile

    text = (f"architecture: x86_64\ncreation_date: {int(rootfs.stat().st_mtime)}\nproperties:\n  os: debian\n"
            f"  release: {SUITE}\n  description: cloudemu node ({rootfs.name})\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("metadata.yaml")
        info.size, info.mtime = len(text), int(rootfs.stat().st_mtime)
        tar.addfile(info, io.BytesIO(text.encode()))
    return buf.getvalue()


def import_lxd(rootfs: Path, image: str = DEFAULT_IMAGE, client=None) -> str:
    """Into this machine's LXD, or into the LXD cluster `client` speaks to (once: LXD copies it to members)."""
    client = client or lxd_client()
    alias = lxd_alias(image)
    if client.images.exists(alias, alias=True):
        existing = client.images.get_by_alias(alias)
        if existing.properties.get("description", "").endswith(f"({rootfs.name})"):
            return existing.fingerprint  # already made from this very root file system
        existing.delete(wait=True)
    made = client.images.create(rootfs_tarball(rootfs).read_bytes(), metadata=lxd_metadata(rootfs), wait=True)
    made.add_alias(alias, f"cloudemu node image from {rootfs.name}")
    return made.fingerprint


def lxd_images() -> list[dict[str, str]]:
    out = []
    for img in lxd_client().images.all():
        for alias in img.aliases:
            if alias["name"].startswith("cloudemu/"):
                out.append({"engine": "lxd", "image": alias["name"], "id": img.fingerprint[:12],
                            "rootfs": img.properties.get("description", ""), "size_mb": str(round(img.size / 1e6))})
    return out
