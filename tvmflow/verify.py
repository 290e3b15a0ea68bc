"""``tvmflow verify``: both import paths, compiled for the host, checked against PyTorch."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import TvmflowError
from .registry import resolve_variants

TOLERANCE = 1e-4


@dataclass
class VerifyRow:
    variant: str
    frontend: str
    max_abs_error: float
    passed: bool


@dataclass
class VerifyResult:
    rows: list[VerifyRow]
    tolerance: float
    target: dict

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    def to_json(self) -> dict:
        return dict(tolerance=self.tolerance, target=self.target, passed=self.passed,
                    rows=[asdict(r) for r in self.rows])


def verify(variants="all", frontends=("torch", "onnx"), *, seed: int = 0,
           tolerance: float = TOLERANCE, on_row=None) -> VerifyResult:
    """Compile each variant for the host via each frontend and compare with PyTorch."""
    from .adapter.build import build, run_local
    from .frontend import import_model
    from .targets import get_target
    host = get_target("host")
    target = host.tvm_target()
    rows = []
    for name in resolve_variants(variants):
        for fe in frontends:
            model = import_model(name, frontend=fe, seed=seed)
            x = model.example_input()
            out = run_local(build(model.mod, target), x)
            ref = model.reference(x)
            if out.shape != ref.shape:
                raise TvmflowError(f"{name} via {fe}: TVM output shape {out.shape} != PyTorch {ref.shape}")
            err = float(np.max(np.abs(out - ref)))
            row = VerifyRow(name, fe, err, bool(err <= tolerance))
            rows.append(row)
            if on_row:
                on_row(row)
    return VerifyResult(rows, tolerance, host.target)
