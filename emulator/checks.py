"""What `cloudemu run` tests: pingall, then the checks a topology file declares."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from emulator.api import Emulation
from emulator.model import Check


@dataclass
class CheckResult:
    name: str
    passed: bool
    seconds: float
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "seconds": round(self.seconds, 3), "message": self.message}


def run_all(emu: Emulation, checks: list[Check], *, wait: float, bring_up: Callable[[], Any]) -> list[CheckResult]:
    """`cloudemu run`: up, pingall (retried for `wait` seconds while switches converge), the checks, down;
    a failure on the way is a failed step, and down always runs once something was made."""
    from emulator.alcor.errors import AgentError
    from emulator.runtime.distributed import ClusterError
    from emulator.runtime.executor import CommandError
    from emulator.runtime.ssh import MachineError
    from emulator.runtime.workers import WorkerError
    from provisioners.base import NodeStartError

    results: list[CheckResult] = []
    t0 = time.perf_counter()
    try:
        bring_up()
        results.append(CheckResult("up", True, time.perf_counter() - t0,
                                   f"{len(emu.plan.nodes)} nodes, {len(emu.plan.links)} links"))
        ping = emu.pingall(wait=wait)
        results.append(CheckResult("pingall", not ping.failed, ping.seconds,
                                   f"{ping.pairs} pairs, {ping.loss_percent:.1f}% loss"
                                   + (f"; failed: {ping.failed[:10]}" if ping.failed else "")))
        for check in checks:
            results.append(run_check(emu, check))
    except (CommandError, ClusterError, MachineError, WorkerError, AgentError, NodeStartError) as exc:
        results.append(CheckResult("up", False, time.perf_counter() - t0, str(exc)))
    finally:
        if emu.plan is not None:
            t1 = time.perf_counter()
            res = emu.down()
            results.append(CheckResult("down", res.clean, time.perf_counter() - t1,
                                       f"removed {res.removed}" + (f"; left {res.left}" if res.left else "")))
    return results


def run_check(emu: Emulation, check: Check) -> CheckResult:
    t0 = time.perf_counter()
    try:
        passed, message = _RUNNERS[check.kind](emu, check.args)
    except (subprocess.TimeoutExpired, OSError, ValueError, KeyError) as exc:
        passed, message = False, f"{type(exc).__name__}: {exc}"
    return CheckResult(check.title, passed, time.perf_counter() - t0, message)


def _ping(emu: Emulation, args: dict) -> tuple[bool, str]:
    dst = emu.node(args["to"]).ip
    proc = emu.node(args["from"]).run(["ping", "-c", str(args.get("count", 3)), "-i", "0.2", "-W", "1", dst])
    summary = next((ln for ln in proc.stdout.splitlines() if "packet loss" in ln), proc.stderr.strip())
    return proc.returncode == 0 and " 0% packet loss" in summary, summary


def _exec(emu: Emulation, args: dict) -> tuple[bool, str]:
    proc = emu.node(args["node"]).run(args["cmd"])
    want_rc = args.get("expect_rc", 0)
    out = proc.stdout + proc.stderr
    if proc.returncode != want_rc:
        return False, f"exit code {proc.returncode}, expected {want_rc}: {out.strip()[-300:]}"
    if "expect_output" in args and str(args["expect_output"]) not in out:
        return False, f"output lacks {args['expect_output']!r}: {out.strip()[-300:]}"
    return True, f"exit code {proc.returncode}"


def tcp_goodput(link_mbit: float, mtu: int = 1500) -> float:
    """What TCP can carry over a link shaped to `link_mbit`: HTB counts whole frames (14 bytes of Ethernet
    header each), iperf3 counts payload (MTU less 20 of IP, 20 of TCP and 12 of timestamps). At MTU 1500:
    1448 of 1514 bytes, so a 50 Mbit/s link carries 47.8 Mbit/s of TCP, as measured here in steady state."""
    return link_mbit * (mtu - 52) / (mtu + 14)


def iperf(emu: Emulation, client: str, server: str, seconds: int = 3, omit: int = 1) -> float:
    """TCP throughput client -> server in Mbit/s, as the receiver saw it, after the first `omit` seconds
    (slow start: a 3 s run with its ramp-up measures a shaped link short by its first round trips)."""
    srv = emu.node(server).popen(["iperf3", "-s", "-1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        report: dict = {}
        for _ in range(25):  # the server needs a moment to listen
            proc = emu.node(client).run(["iperf3", "-J", "-c", emu.node(server).ip, "-t", str(seconds),
                                         "-O", str(omit)], timeout=seconds + omit + 30)
            try:
                report = json.loads(proc.stdout)
            except ValueError:
                report = {"error": (proc.stdout + proc.stderr)[-300:]}
            # iperf3 3.12 exits 0 on a refused connection in JSON mode: the report's "error" tells
            if proc.returncode == 0 and "error" not in report:
                return report["end"]["sum_received"]["bits_per_second"] / 1e6
            time.sleep(0.2)
        raise ValueError(f"iperf3 failed: {report.get('error')}")
    finally:
        srv.kill()
        srv.wait()


def _iperf(emu: Emulation, args: dict) -> tuple[bool, str]:
    mbps = iperf(emu, args["client"], args["server"], int(args.get("seconds", 3)))
    lo, hi = args.get("min_mbps"), args.get("max_mbps")
    ok = (lo is None or mbps >= lo) and (hi is None or mbps <= hi)
    return ok, f"{mbps:.1f} Mbit/s" + (f" (expected {lo or 0}..{hi or 'any'})" if not ok else "")


_RUNNERS = {"ping": _ping, "exec": _exec, "iperf": _iperf}


def junit_xml(suite: str, results: list[CheckResult]) -> str:
    """A JUnit report for CI systems: one testcase per phase and check."""
    from xml.sax.saxutils import quoteattr

    failures = sum(1 for r in results if not r.passed)
    total = sum(r.seconds for r in results)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<testsuites tests="{len(results)}" failures="{failures}" time="{total:.3f}">',
             f'  <testsuite name={quoteattr(suite)} tests="{len(results)}" failures="{failures}" time="{total:.3f}">']
    for r in results:
        head = f'    <testcase classname={quoteattr(suite)} name={quoteattr(r.name)} time="{r.seconds:.3f}"'
        if r.passed:
            lines.append(head + "/>")
        else:
            lines += [head + ">", f"      <failure message={quoteattr(r.message[:500])}/>", "    </testcase>"]
    lines += ["  </testsuite>", "</testsuites>", ""]
    return "\n".join(lines)
