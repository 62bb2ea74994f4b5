"""Named network namespaces, made as `ip netns add` makes them, without its remount before each one.

Before every namespace, `ip netns add` (and pyroute2's netns.create) marks /run/netns shared, recursively
(MS_SHARED | MS_REC), which walks every namespace mount already below it: each namespace costs as much as those
already there. Four batches of 5,000 took 2.3, 4.7, 6.7 and 8.6 s (perf: invent_group_ids and
change_mnt_propagation). Here `ip netns add` makes the first, which sets /run/netns up as it always does; each
other is a file there with a fresh namespace bind-mounted on it, from worker threads (unshare(CLONE_NEWNET) moves
only the calling thread).
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from pyroute2.netns import setns

from emulator.runtime.tokens import identifier

NETNS_RUN = "/run/netns"
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def add(names: list[str], ip_batch: Callable[[list[str]], None], workers: int = 2,
        on_done: Callable[[int], None] | None = None) -> None:
    """Make every named namespace; `ip_batch` runs `ip -batch` lines (the first is made by `ip`). Raises the first
    error; a namespace whose file exists already is an error, as with `ip netns add`."""
    names = [identifier(n, "namespace name") for n in names]  # each becomes a path: no '/', no leading dot
    if not names:
        return
    ip_batch([f"netns add {names[0]}"])
    if on_done:
        on_done(1)
    in_threads(names[1:], _add_one, workers, on_done, every=100)


def _add_one(name: str) -> None:
    path = f"{NETNS_RUN}/{name}"
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    try:
        _call(_libc.unshare, CLONE_NEWNET, what=f"unshare for {name}")
        _call(_libc.mount, b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None, what=f"mount {path}")
    except BaseException:
        os.unlink(path)
        raise


def _call(function: Callable[..., int], *args: object, what: str) -> None:
    if function(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def in_threads(items: list[T], one: Callable[[T], None], workers: int = 2,
               on_done: Callable[[int], None] | None = None, every: int = 50) -> None:
    """`one(item)` for every item, from `workers` threads that may each move between network namespaces (setns and
    unshare act on the calling thread only) and are moved back where they started; `on_done(n)` every `every`
    items; raises the first error."""
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(chunk: list[T]) -> None:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            for i, item in enumerate(chunk):
                if errors:
                    return
                one(item)
                if on_done and (i % every == every - 1 or i == len(chunk) - 1):
                    with lock:
                        on_done(i % every + 1)
        except BaseException as exc:  # surfaced to the caller below
            errors.append(exc)
        finally:
            setns(home)  # the thread ends anyway; leave it where it started
            os.close(home)

    threads = [threading.Thread(target=work, args=(items[i::workers],), name=f"netns-worker-{i}", daemon=True)
               for i in range(max(1, workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
