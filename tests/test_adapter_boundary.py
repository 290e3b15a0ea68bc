"""All TVM calls live in tvmflow/adapter: no other tvmflow module imports tvm (or tvm_ffi)."""

from __future__ import annotations

import ast
from pathlib import Path

import tvmflow

PACKAGE = Path(tvmflow.__file__).resolve().parent
TVM_ROOTS = {"tvm", "tvm_ffi"}


def tvm_imports(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import of tvm / tvm_ffi in ``source``, at any depth."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] in TVM_ROOTS]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in TVM_ROOTS:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) \
                in ("import_module", "__import__") and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str) \
                and node.args[0].value.split(".")[0] in TVM_ROOTS:
            found.append((node.lineno, node.args[0].value))
    return found


def test_checker_finds_every_import_form():
    src = ("import os\nimport tvm\nfrom tvm import relax\nimport tvm.runtime as rt\n"
           "def f():\n    from tvm.support import cc\n    import importlib\n"
           "    importlib.import_module('tvm.relax')\n"
           "from tvmflow import x\nfrom .tvm import y\nimport tvm_ffi\nimport tvmlike\n")
    assert sorted(tvm_imports(src)) == [(2, "tvm"), (3, "tvm"), (4, "tvm.runtime"),
                                        (6, "tvm.support"), (8, "tvm.relax"), (11, "tvm_ffi")]


def test_no_tvm_import_outside_adapter():
    files = [p for p in PACKAGE.rglob("*.py") if "adapter" not in p.relative_to(PACKAGE).parts]
    assert len(files) > 10  # the package itself, not an empty glob
    offenders = [f"{p.relative_to(PACKAGE.parent)}:{line}: import {mod}"
                 for p in files for line, mod in tvm_imports(p.read_text())]
    assert not offenders, "TVM imported outside tvmflow/adapter:\n" + "\n".join(offenders)


def test_adapter_does_import_tvm():
    """The boundary is where TVM is used (guards against a checker that never matches)."""
    adapter = PACKAGE / "adapter"
    assert any(tvm_imports(p.read_text()) for p in adapter.glob("*.py"))
