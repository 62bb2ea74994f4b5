"""The devices of the calling process's network namespace, over netlink.

/sys/class/net shows the namespace sysfs was mounted in, not the caller's: on a
machine emulated as a namespace (scripts/testbed) it would list the host's.
"""

from __future__ import annotations

from pyroute2 import IPRoute


def aliases() -> dict[str, str]:
    """Every device of this namespace -> its ifalias ('' when none)."""
    with IPRoute() as ipr:
        return {link.get_attr("IFLA_IFNAME"): link.get_attr("IFLA_IFALIAS") or "" for link in ipr.get_links()}


def names() -> set[str]:
    return set(aliases())


def vxlan_ids() -> dict[int, str]:
    """VNI -> device, for the VXLAN devices here (a VNI in use cannot be bound twice on one UDP port)."""
    out = {}
    with IPRoute() as ipr:
        for link in ipr.get_links():
            info = link.get_attr("IFLA_LINKINFO")
            if info and info.get_attr("IFLA_INFO_KIND") == "vxlan":
                data = info.get_attr("IFLA_INFO_DATA")
                vni = data.get_attr("IFLA_VXLAN_ID") if data else None
                if vni is not None:
                    out[int(vni)] = link.get_attr("IFLA_IFNAME")
    return out
