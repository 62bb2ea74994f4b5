"""Regenerates the Python modules of the goal-state schema from the .proto files beside them.

The generated modules are committed so that running the agent needs only grpcio and protobuf;
`--check` (used by the tests) says whether they are still what the .proto files produce.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
PROTOS = sorted(HERE.glob("*.proto"))


def generate(out: Path) -> list[Path]:
    """Runs protoc (from grpcio-tools) into `out`; returns the files written."""
    from grpc_tools import protoc

    args = ["protoc", f"-I{ROOT}", f"--python_out={out}", f"--grpc_python_out={out}"]
    args += [str(p.relative_to(ROOT)) for p in PROTOS]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on " + ", ".join(p.name for p in PROTOS))
    written = sorted((out / HERE.relative_to(ROOT)).glob("*_pb2*.py"))
    for empty in [f for f in written if f.name.endswith("_grpc.py") and "Stub" not in f.read_text()]:
        empty.unlink()  # a .proto without a service gives a module with nothing in it
        written.remove(empty)
    return written


def stale() -> list[str]:
    """The committed generated modules that differ from a fresh generation."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        return [f.name for f in fresh if not (HERE / f.name).exists() or not filecmp.cmp(f, HERE / f.name, shallow=False)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report modules that are out of date")
    if parser.parse_args().check:
        out_of_date = stale()
        print("\n".join(out_of_date) or "up to date")
        return 1 if out_of_date else 0
    written = generate(ROOT)
    print("\n".join(str(p.relative_to(ROOT)) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
