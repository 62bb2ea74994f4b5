"""The node image for container engines."""

from __future__ import annotations

import time

import click

from emulator.cli.common import (
    OUTPUT,
    emit,
    err,
    guarded,
    out,
    table_of,
)


@click.group()
def image() -> None:
    """The node image for container engines, built from the Debian mirror (no registry needed)."""


@image.command("build")
@click.option("--engine", type=click.Choice(["docker", "lxd"]), multiple=True, default=["docker", "lxd"],
              show_default=True)
@click.option("--cluster", "cluster_file", type=click.Path(exists=True, dir_okay=False),
              help="an inventory with lxd: import the LXD image once into that cluster (not this machine's LXD)")
@OUTPUT
@guarded
def image_build(engine: tuple[str, ...], cluster_file: str | None, output: str) -> None:
    """debootstrap a root file system (cached), then import it as cloudemu/node:1."""
    from provisioners import images

    lxd_api = None
    if cluster_file:
        from emulator.runtime import lxdcluster
        from emulator.topology.cluster import load_cluster

        cluster = load_cluster(cluster_file)
        if cluster.lxd is None:
            raise click.UsageError(f"{cluster_file} has no lxd: section: --cluster names an LXD cluster's inventory")
        lxd_api = lxdcluster.client(cluster.lxd)
    t0 = time.perf_counter()
    rootfs = images.build_rootfs(log=lambda text: err.print(text, highlight=False))
    built = {"rootfs": str(rootfs), "rootfs_seconds": round(time.perf_counter() - t0, 2), "images": []}
    for name in engine:
        t1 = time.perf_counter()
        image_id = images.import_docker(rootfs) if name == "docker" else images.import_lxd(rootfs, client=lxd_api)
        built["images"].append({"engine": name, "image": images.DEFAULT_IMAGE, "id": image_id,
                                "seconds": round(time.perf_counter() - t1, 2)})
    if output == "json":
        return emit(built, output)
    for row in built["images"]:
        out.print(f"{row['engine']}: {row['image']} ({row['id'][:19]}) in {row['seconds']} s")


@image.command("list")
@OUTPUT
@guarded
def image_list(output: str) -> None:
    """Node images present in the engines."""
    from provisioners import images

    rows = images.docker_images() + images.lxd_images()
    table = table_of("images", "engine", "image", "id", "rootfs", "size MB")
    for r in rows:
        table.add_row(r["engine"], r["image"], r["id"], r["rootfs"], r["size_mb"])
    emit(rows, output, table)
