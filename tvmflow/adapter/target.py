"""Target construction and host detection (TVM 0.27: targets are JSON dicts)."""

from __future__ import annotations

from typing import Any

from tvmflow.errors import TvmflowError


def system_cpu() -> str:
    from tvm.target import codegen
    return str(codegen.llvm_get_system_cpu())


def is_valid_cpu(mcpu: str, mtriple: str | None = None) -> bool:
    from tvm.target import codegen
    return bool(codegen.llvm_is_valid_cpu(mcpu, mtriple or "x86_64-linux-gnu"))


def cpu_features(mcpu: str, mtriple: str | None = None) -> set[str]:
    """LLVM's feature names (``avx2``, ``avx512f``, ...) of CPU ``mcpu``; empty when LLVM does
    not know it."""
    import tvm
    from tvm.target import codegen
    if not is_valid_cpu(mcpu, mtriple):
        return set()
    try:
        target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu,
                                    "mtriple": mtriple or "x86_64-linux-gnu"})
        return {str(f) for f in codegen.llvm_get_cpu_features(target)}
    except Exception:  # an unknown CPU name
        return set()


def make_target(target: dict[str, Any], host: dict[str, Any] | None = None):
    """A ``tvm.target.Target`` from dicts; TVM's own complaint becomes a TvmflowError."""
    import tvm
    try:
        if host is not None:
            return tvm.target.Target(dict(target), host=dict(host))
        return tvm.target.Target(dict(target))
    except Exception as exc:  # TVM raises its own error types (tvm.error.TVMError, ValueError)
        raise TvmflowError(f"TVM rejects target {target}: {str(exc).strip().splitlines()[-1]}") from None


def cpu_names(mtriple: str | None = None) -> list[str]:
    """Every CPU name LLVM knows for ``mtriple`` (x86-64 by default)."""
    import tvm
    from tvm.target import codegen
    target = tvm.target.Target({"kind": "llvm", "mtriple": mtriple or "x86_64-linux-gnu"})
    return [str(name) for name in codegen.llvm_get_cpu_archlist(target)]
