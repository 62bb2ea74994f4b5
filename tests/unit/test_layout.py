"""The house's shape (DESIGN.md): no import cycles, and arrows point down the table of rooms."""

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[2]


def imports_graph() -> nx.DiGraph:
    """Every import of ours, at module level or inside a function (a lazy import is still an arrow)."""
    modules = {}
    for path in [*ROOT.glob("emulator/**/*.py"), *ROOT.glob("provisioners/**/*.py")]:
        if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
            continue
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        # a package's __getattr__ (PEP 562) imports on first use, never while the package loads: not an arrow
        lazy = {id(n) for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "__getattr__"
                for n in ast.walk(f)}
        for node in ast.walk(tree):
            if id(node) in lazy:
                continue
            if isinstance(node, ast.ImportFrom) and node.module:
                wanted = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                wanted = [a.name for a in node.names]
            else:
                continue
            found = {t for t in wanted if t in modules}
            # importing a.b.c runs a/__init__ and a/b/__init__ first: those are arrows too
            found |= {".".join(t.split(".")[:i]) for t in found for i in range(1, t.count(".") + 1)}
            graph.add_edges_from((name, t) for t in found if t in modules and t != name and not name.startswith(t + "."))
    return graph


def test_no_import_cycles():
    assert list(nx.simple_cycles(imports_graph())) == []


def test_arrows_point_down_the_table_of_rooms():
    graph = imports_graph()

    def ours(module: str) -> set[str]:
        return {t for t in graph.successors(module)}
    assert ours("emulator.model") == set()  # the model knows no engine and nothing of ours
    for module in graph:
        targets = ours(module)
        if module.startswith(("emulator.topology", "emulator.compiler")):
            assert not any(t.startswith(("provisioners", "emulator.runtime", "emulator.cli", "emulator.alcor"))
                           for t in targets), (module, targets)
        if module.startswith("provisioners"):
            assert not any(t.startswith(("emulator.cli", "emulator.api")) for t in targets), (module, targets)
        if not module.startswith(("emulator.cli", "emulator.__main__")):
            assert not any(t.startswith("emulator.cli") for t in targets), (module, targets)
