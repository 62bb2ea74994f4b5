"""Density: cloudemu's up and down at H hosts on one machine, the cost per host and the machine's memory per host.

H hosts over S OVS switches in a chain (`linear`), the userspace datapath; MemAvailable before and after `up`
gives the memory per emulated host (kernel objects, OVS daemons, cloudemu's own included); each run prints one
JSON line. benchmarks/setup_rate.py puts the same beside Mininet, a bare loop and the kernel floor.

    sudo .venv/bin/python benchmarks/density.py 20000 400     # (run three times for a median and range)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulator import Emulation, load_text  # noqa: E402


def available_kb() -> int:
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return int(info["MemAvailable"].split()[0])


def main() -> None:
    hosts, switches = int(sys.argv[1]), int(sys.argv[2])
    os.environ.setdefault("CLOUDEMU_STATE_DIR", tempfile.mkdtemp(prefix="cloudemu-bench-"))
    before = available_kb()
    emu = Emulation(load_text(f"version: 1\nname: dens\ntopology: {{generator: linear, switches: {switches}, "
                              f"hosts_per_switch: {hosts // switches}}}\n"))
    t0 = time.perf_counter()
    emu.up()
    up = time.perf_counter() - t0
    used = before - available_kb()
    t0 = time.perf_counter()
    res = emu.down()
    down = time.perf_counter() - t0
    print(json.dumps({"hosts": hosts, "up": round(up, 2), "down": round(down, 2), "per_host_ms": round(up / hosts * 1e3, 2),
                      "mem_kb_per_host": round(used / hosts, 1), "clean": res.clean,
                      "phases": {k: round(v, 2) for k, v in emu.timings.items()}}))


if __name__ == "__main__":
    main()
