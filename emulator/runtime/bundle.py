"""The worker cloudemu ships to each machine: its own Python packages in one zip, named by content.

A machine runs exactly the controller's code (no version skew); it needs only the
third-party dependencies installed (what `pip install cloudemu` pulls in).
"""

from __future__ import annotations

import functools
import hashlib
import io
import zipfile
from pathlib import Path

PACKAGES = ("emulator", "provisioners")
MAIN = "from emulator.runtime.worker import main\nmain()\n"


@functools.cache
def runner_zip() -> tuple[bytes, str]:
    """(zip bytes, short content hash): built once per process, identical for identical sources."""
    root = Path(__file__).resolve().parents[2]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        files = sorted(p for pkg in PACKAGES for p in (root / pkg).rglob("*.py"))
        for path in files:
            info = zipfile.ZipInfo(str(path.relative_to(root)), date_time=(2020, 1, 1, 0, 0, 0))
            zf.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
        zf.writestr(zipfile.ZipInfo("__main__.py", date_time=(2020, 1, 1, 0, 0, 0)), MAIN)
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()[:16]


def remote_path(digest: str) -> str:
    """Relative to the login directory: no root needed to place it."""
    return f".cache/cloudemu/worker-{digest}.pyz"
