#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for cloudemu, idempotently: system packages,
# Open vSwitch running, and a virtualenv (.venv) with cloudemu installed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/setup.sh installs packages and starts Open vSwitch: run it as root (sudo)" >&2
  exit 2
fi

packages=(openvswitch-switch iproute2 iputils-ping iperf3 mininet ethtool python3-venv docker.io debootstrap lxd openssh-server openssh-client udhcpc)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The kernel's ARP table is one for every network namespace: at its default 1,024 entries, 150 hosts pinging
# a few peers each fill it and new neighbours fail ("neighbor table overflow"). Room for 8 per host of 20,000+
# (entries are made only when used); only ever raised.
for pair in "gc_thresh1 131072" "gc_thresh2 262144" "gc_thresh3 524288"; do
  set -- $pair
  [ "$(cat /proc/sys/net/ipv4/neigh/default/$1)" -ge "$2" ] || sysctl -qw "net.ipv4.neigh.default.$1=$2"
done

# Named network namespaces are files in /run/netns. Where /run is not a tmpfs (this machine kind: it is on the
# root ext4), each `netns add` allocates an ext4 inode, and ext4 scans its recently deleted inodes to do so: 5,000
# namespaces took 4.7 s there and 2.8 s on a tmpfs, and each run after a big `down` was slower. Give /run/netns a
# tmpfs of its own, as /run is on most systems: only while it holds no namespace (never hide anyone's).
netns_dir=/run/netns
mkdir -p "$netns_dir"
if [ "$(stat -f -c %T "$netns_dir")" != tmpfs ]; then
  if [ -z "$(ls -A "$netns_dir")" ]; then
    mount -t tmpfs -o mode=0755,size=64m cloudemu-netns "$netns_dir"
  else
    echo "note: $netns_dir is on disk and not empty, so it stays there (namespaces are made more slowly)" >&2
  fi
fi

# Open vSwitch: start it ourselves when nothing (systemd) did.
if ! ovs-vsctl --timeout=3 show >/dev/null 2>&1; then
  /usr/share/openvswitch/scripts/ovs-ctl --system-id=random --no-monitor start >/dev/null 2>&1 || true
  ovs-vsctl --timeout=10 show >/dev/null || { echo "Open vSwitch did not start" >&2; exit 1; }
fi

# Docker engine: no systemd here, so start dockerd ourselves when its socket does not answer.
if ! timeout 5 docker version >/dev/null 2>&1; then
  setsid -f dockerd >/var/log/cloudemu-dockerd.log 2>&1 < /dev/null
  for _ in $(seq 1 60); do timeout 5 docker version >/dev/null 2>&1 && break; sleep 0.5; done
  timeout 5 docker version >/dev/null 2>&1 || { echo "dockerd did not start: see /var/log/cloudemu-dockerd.log" >&2; exit 1; }
fi

# LXD: start the daemon ourselves likewise; on a fresh LXD (no storage pool yet) give it a dir pool and a
# default profile with only a root disk (cloudemu wires the instances' interfaces itself). An LXD that is
# already set up is left as it is.
if ! timeout 5 lxc query /1.0 >/dev/null 2>&1; then
  setsid -f lxd --group root >/var/log/cloudemu-lxd.log 2>&1 < /dev/null
  timeout 60 lxd waitready || { echo "lxd did not start: see /var/log/cloudemu-lxd.log" >&2; exit 1; }
fi
if [ "$(lxc query /1.0/storage-pools 2>/dev/null | tr -d '[:space:][]')" = "" ]; then
  lxd init --preseed <<'PRESEED'
config: {}
storage_pools:
- {name: cloudemu, driver: dir}
profiles:
- name: default
  devices:
    root: {path: /, pool: cloudemu, type: disk}
PRESEED
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
# The node image for container engines: debootstrap once (cached in /var/cache/cloudemu), then import.
.venv/bin/cloudemu image build -o json >/dev/null
echo "ready: .venv/bin/cloudemu ($(.venv/bin/cloudemu --version))"
