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
PACKAGES = ("openvswitch-switch", "iproute2", "python3", "iputils-ping", "iperf3", "procps")
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
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise PreflightError(f"debootstrap failed ({proc.returncode}):\n{tail}")
    shutil.rmtree(staging / "var" / "cache" / "apt" / "archives", ignore_errors=True)
    staging.rename(target)
    return target


def rootfs_tarball(rootfs: Path) -> Path:
    tarball = rootfs.with_suffix(".tar")
    if not tarball.exists():
        partial = tarball.with_suffix(".tar.partial")
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."], check=True)
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
