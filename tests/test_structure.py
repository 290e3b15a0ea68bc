"""The shape of the code, read from the source with ``ast`` (nothing is imported).

* no import cycles among tvmflow's modules, imports inside functions included;
* the layering of the redesign (issue 16): a module imports only from its own layer or a
  lower one (:data:`LAYERS`);
* every ``tvmflow.*`` import names a module that exists;
* no module over 400 lines and no function over 60 lines in tvmflow/, benchmarks/ and
  scripts/ (tests are exempt);
* TVM (``tvm``, ``tvm_ffi``) is imported only inside tvmflow/adapter/ (in tvmflow/,
  benchmarks/ and scripts/, but for the files named in :data:`TVM_EXEMPT`).

Each check first proves on a small made-up source that it finds what it looks for, so a
checker that never matches cannot pass the real tree unseen.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tvmflow"
SOURCE_DIRS = ("tvmflow", "benchmarks", "scripts")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
TVM_ROOTS = {"tvm", "tvm_ffi"}
#: files that may import TVM outside tvmflow/adapter/, and why
TVM_EXEMPT = {
    "scripts/gpu/preflight.py": "checks the TVM install itself (its versions, its CUDA "
                                "runtime) on a GPU machine before tvmflow runs there",
}

#: the stage order, lowest first: a module may import from its own layer and those before it.
#: Keyed by the name below ``tvmflow.`` ("" is the package's own ``__init__``).
LAYERS: list[tuple[str, set[str]]] = [
    ("core", {"errors", "ui", "_version", "files", "workspace", "threads", "signals"}),
    ("adapter", {"adapter"}),
    ("spec/target", {"spec", "target"}),
    ("ir", {"ir"}),
    ("tuning", {"tuning"}),
    ("artifact", {"artifact"}),
    ("runtime", {"runtime"}),
    ("board", {"board"}),          # a device: the runtime reaches it, measure asks about it
    ("measure", {"measure"}),
    ("experiments", {"experiments"}),
    ("cli", {"cli", "__main__", ""}),
]


# ------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Import:
    line: int
    module: str                  # absolute dotted name (relative imports resolved)
    names: tuple[str, ...] = ()  # ``from module import names``; () for ``import module``


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _dynamic_import(node: ast.Call) -> str | None:
    """The module of ``importlib.import_module("x")`` / ``__import__("x")``, else None."""
    func = getattr(node.func, "attr", getattr(node.func, "id", ""))
    if func in ("import_module", "__import__") and node.args and \
            isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        return node.args[0].value
    return None


def imports(source: str, module: str = "", is_package: bool = False) -> list[Import]:
    """Every import in ``source``, at any depth (functions, classes, ``if`` blocks)."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level and package:
                parent = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(p for p in [*parent, base] if p)
            elif node.level:  # relative, in a source of unknown place: kept relative
                base = "." * node.level + base
            found.append(Import(node.lineno, base, tuple(a.name for a in node.names)))
        elif isinstance(node, ast.Call) and (name := _dynamic_import(node)):
            found.append(Import(node.lineno, name))
    return found


def tvm_imports(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import of tvm / tvm_ffi in ``source``."""
    return [(i.line, i.module) for i in imports(source) if i.module.split(".")[0] in TVM_ROOTS]


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    line: int


def module_edges(sources: dict[str, tuple[str, bool]]) -> tuple[list[Edge], list[str]]:
    """The tvmflow -> tvmflow imports of ``{module: (source, is_package)}``, and a line per
    import naming a tvmflow module that does not exist.

    ``from tvmflow.x import y`` is an edge to ``tvmflow.x.y`` when that is a module, else to
    ``tvmflow.x``."""
    edges, missing = [], []
    for src, (text, is_package) in sources.items():
        for imp in imports(text, src, is_package):
            if imp.module.split(".")[0] != "tvmflow":
                continue
            subs = [f"{imp.module}.{n}" for n in imp.names if f"{imp.module}.{n}" in sources]
            plain = len(subs) < len(imp.names) or not imp.names
            targets = subs + ([imp.module] if plain else [])
            for dst in targets:
                if dst in sources:
                    edges.append(Edge(src, dst, imp.line))
                else:
                    missing.append(f"{src}:{imp.line}: imports {dst}, which does not exist")
    return edges, missing


def find_cycles(edges: list[Edge]) -> list[list[Edge]]:
    """One cycle (as its edges) per strongly connected component with more than one module,
    or a module importing itself."""
    graph: dict[str, list[Edge]] = {}
    for e in edges:
        graph.setdefault(e.src, []).append(e)
        graph.setdefault(e.dst, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:  # Tarjan; the graph is small, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for e in graph[v]:
            if e.dst not in index:
                connect(e.dst)
                low[v] = min(low[v], low[e.dst])
            elif e.dst in on_stack:
                low[v] = min(low[v], index[e.dst])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            components.append(comp)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    cycles = []
    for comp in components:
        start = min(comp)
        if len(comp) > 1 or any(e.dst == start for e in graph[start]):
            cycles.append(_cycle_through(graph, comp, start))
    return cycles


def _cycle_through(graph: dict[str, list[Edge]], comp: set[str], start: str) -> list[Edge]:
    """The shortest path of edges from ``start`` back to itself inside ``comp`` (BFS)."""
    came: dict[str, Edge] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for e in sorted(graph[v], key=lambda e: e.dst):
                if e.dst not in comp or e.dst in came:
                    continue
                came[e.dst] = e
                if e.dst == start:
                    path, w = [], start
                    while True:
                        path.append(came[w])
                        w = came[w].src
                        if w == start:
                            return path[::-1]
                nxt.append(e.dst)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def layer_of(module: str) -> int | None:
    key = module.split(".")[1] if "." in module else ""
    return next((i for i, (_name, keys) in enumerate(LAYERS) if key in keys), None)


def layer_violations(edges: list[Edge], path_of=str) -> list[str]:
    out = []
    for e in edges:
        a, b = layer_of(e.src), layer_of(e.dst)
        if a is not None and b is not None and b > a:
            out.append(f"{path_of(e.src)}:{e.line}: {e.src} ({LAYERS[a][0]}) imports {e.dst} "
                       f"({LAYERS[b][0]}), a higher layer")
    return out


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[int, str, int]]:
    """(line, qualified name, lines) of every function (nested ones and methods too) longer
    than ``limit`` lines, from its ``def`` to its last line."""
    out = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                length = child.end_lineno - child.lineno + 1
                if not isinstance(child, ast.ClassDef) and length > limit:
                    out.append((child.lineno, name, length))
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return out


# ------------------------------------------------------------------------------- the tree


def package_sources() -> dict[str, tuple[str, bool]]:
    return {module_name(p): (p.read_text(), p.name == "__init__.py")
            for p in sorted(PACKAGE.rglob("*.py"))}


def source_files() -> list[Path]:
    return [p for d in SOURCE_DIRS for p in sorted((ROOT / d).rglob("*.py"))
            if "tests" not in p.relative_to(ROOT).parts]


def _path_of(module: str) -> str:
    rel = Path(*module.split("."))
    return str(rel / "__init__.py") if (ROOT / rel).is_dir() else f"{rel}.py"


def _tree_edges() -> list[Edge]:
    edges, _missing = module_edges(package_sources())
    return edges


# ------------------------------------------------------------------------------- checkers


def test_imports_finds_every_form():
    src = ("import os\nimport tvm\nfrom tvm import relax\nimport tvm.runtime as rt\n"
           "def f():\n    from tvm.support import cc\n    import importlib\n"
           "    importlib.import_module('tvm.relax')\n"
           "from tvmflow import x\nfrom .tvm import y\nimport tvm_ffi\nimport tvmlike\n")
    assert sorted(tvm_imports(src)) == [(2, "tvm"), (3, "tvm"), (4, "tvm.runtime"),
                                        (6, "tvm.support"), (8, "tvm.relax"), (11, "tvm_ffi")]
    rel = imports("from . import a\nfrom ..b import c\nfrom .d.e import f\n",
                  "tvmflow.measure.report")
    assert [i.module for i in rel] == ["tvmflow.measure", "tvmflow.b", "tvmflow.measure.d.e"]
    pkg = imports("from . import a\n", "tvmflow.measure", is_package=True)
    assert pkg[0].module == "tvmflow.measure"


def test_edges_resolve_submodules_and_report_missing():
    sources = {
        "tvmflow": ("", True),
        "tvmflow.adapter": ("", True),
        "tvmflow.adapter.nchwc": ("", False),
        "tvmflow.errors": ("class TvmflowError(Exception): ...\n", False),
        "tvmflow.measure.report": ("from tvmflow.adapter import nchwc\n"
                                   "from tvmflow.errors import TvmflowError\n"
                                   "def f():\n    import tvmflow.nowhere\n"
                                   "from tvmflow.adapter import nchwc, VERSION\n", False),
    }
    edges, missing = module_edges(sources)
    assert [(e.dst, e.line) for e in edges] == [
        ("tvmflow.adapter.nchwc", 1), ("tvmflow.errors", 2),
        ("tvmflow.adapter.nchwc", 5), ("tvmflow.adapter", 5)]
    assert missing == ["tvmflow.measure.report:4: imports tvmflow.nowhere, which does not exist"]


def test_find_cycles_names_each_cycle():
    e = [Edge("a", "b", 1), Edge("b", "c", 2), Edge("c", "a", 3), Edge("c", "d", 4),
         Edge("d", "e", 5), Edge("e", "d", 6), Edge("f", "f", 7), Edge("g", "a", 8)]
    cycles = sorted([[(x.src, x.dst) for x in c] for c in find_cycles(e)])
    assert cycles == [[("a", "b"), ("b", "c"), ("c", "a")], [("d", "e"), ("e", "d")],
                      [("f", "f")]]
    assert find_cycles([Edge("a", "b", 1), Edge("b", "c", 1), Edge("a", "c", 1)]) == []


def test_layer_violations_name_the_import():
    edges = [Edge("tvmflow.measure.report", "tvmflow.experiments.sweep", 12),
             Edge("tvmflow.experiments.sweep", "tvmflow.measure.report", 3),
             Edge("tvmflow.spec.prune", "tvmflow.target.cpus", 4),
             Edge("tvmflow.adapter.pipeline", "tvmflow.errors", 5),
             Edge("tvmflow.errors", "tvmflow.adapter", 6),
             Edge("tvmflow.cli.bench", "tvmflow", 7)]
    assert layer_violations(edges) == [
        "tvmflow.measure.report:12: tvmflow.measure.report (measure) imports "
        "tvmflow.experiments.sweep (experiments), a higher layer",
        "tvmflow.errors:6: tvmflow.errors (core) imports tvmflow.adapter (adapter), "
        "a higher layer"]
    assert layer_of("tvmflow") == layer_of("tvmflow.cli.tune") == len(LAYERS) - 1
    assert layer_of("tvmflow.board.supervisor") == layer_of("tvmflow.board")
    assert layer_of("tvmflow.scratch") is None


def test_long_functions_counts_nested_functions_and_methods():
    body = "".join(f"    x{i} = {i}\n" for i in range(59))
    src = (f"def ok():\n{body}"                       # 60 lines: allowed
           f"def long():\n{body}    return x0\n"       # 61 lines
           "class C:\n    def m(self):\n" + body.replace("    ", "        ") +
           "        def inner():\n            pass\n")
    assert long_functions(src) == [(61, "long", 61), (123, "C.m", 62)]


# ------------------------------------------------------------------------------- the tree


def test_tree_is_read():
    """The checks below see the real package (guards against an empty glob)."""
    sources = package_sources()
    assert {"tvmflow", "tvmflow.errors", "tvmflow.adapter.pipeline", "tvmflow.cli"} <= set(sources)
    assert len(_tree_edges()) > 50
    assert any(tvm_imports(p.read_text()) for p in (PACKAGE / "adapter").rglob("*.py"))


def test_no_import_cycles():
    cycles = find_cycles(_tree_edges())
    text = ["  " + " -> ".join([c[0].src] + [f"{e.dst} ({_path_of(e.src)}:{e.line})" for e in c])
            for c in cycles]
    assert not cycles, "import cycles among tvmflow's modules:\n" + "\n".join(text)


def test_layers():
    """Each module imports only from its own layer or lower ones; every module is in one."""
    sources = package_sources()
    unplaced = [f"{_path_of(m)}: {m} is in no layer (add it to LAYERS and to the design)"
                for m in sources if layer_of(m) is None]
    bad = layer_violations(_tree_edges(), _path_of)
    assert not unplaced + bad, "layering broken:\n" + "\n".join(unplaced + bad)


def test_tvmflow_imports_exist():
    _edges, missing = module_edges(package_sources())
    assert not missing, "imports of tvmflow modules that do not exist:\n" + "\n".join(missing)


def test_module_and_function_sizes():
    files = source_files()
    assert len(files) > 40
    out = []
    for p in files:
        text = p.read_text()
        rel = p.relative_to(ROOT)
        n = len(text.splitlines())
        if n > MAX_MODULE_LINES:
            out.append(f"{rel}: {n} lines (at most {MAX_MODULE_LINES})")
        out += [f"{rel}:{line}: {name}() has {length} lines (at most {MAX_FUNCTION_LINES})"
                for line, name, length in long_functions(text)]
    assert not out, "too long:\n" + "\n".join(out)


def test_tvm_only_in_adapter():
    """All TVM imports stay inside tvmflow/adapter/ (benchmarks and scripts included, but
    for :data:`TVM_EXEMPT`)."""
    adapter = PACKAGE / "adapter"
    files = [p for p in source_files() if adapter not in p.parents
             and str(p.relative_to(ROOT)) not in TVM_EXEMPT]
    assert all((ROOT / f).is_file() for f in TVM_EXEMPT), "an exemption for a file now gone"
    offenders = [f"{p.relative_to(ROOT)}:{line}: import {mod}"
                 for p in files for line, mod in tvm_imports(p.read_text())]
    assert not offenders, "TVM imported outside tvmflow/adapter:\n" + "\n".join(offenders)
