"""``tvmflow verify``: both import paths, compiled for the host, checked against PyTorch."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from tvmflow.errors import TvmflowError
from tvmflow.spec.registry import resolve_variants

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
    threads: int | None = None     # TVM's thread count in this process, as TVM reports it
    pipeline: str | None = None    # the layout and passes checked, e.g. "NCHW8c, padded, ..."

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    def to_json(self) -> dict:
        return dict(tolerance=self.tolerance, target=self.target, passed=self.passed,
                    threads=self.threads, pipeline=self.pipeline,
                    rows=[asdict(r) for r in self.rows])


def verify(variants="all", frontends=("torch", "onnx"), *, seed: int = 0,
           tolerance: float = TOLERANCE, threads: int | None = None, layout: str | None = None,
           conv_rule: str | None = None,
           on_row=None) -> VerifyResult:
    """Compile each variant for the host via each frontend and compare with PyTorch.

    The build is compile's pipeline (untuned): ``layout`` None is the host's default for each
    model (``pipeline.default_options``), or NCHW / NHWC / NCHWc; ``conv_rule`` "fixed" gives
    NCHWc's blocked convs the fixed schedule of ``adapter.conv_rule``.  ``threads``: TVM's thread count here
    (default ``TVM_NUM_THREADS``, else the host's cores).
    """
    check_options(tolerance, layout, conv_rule)
    names = resolve_variants(variants)   # unknown names fail first, with suggestions
    from tvmflow.target.presets import get_target
    from tvmflow.threads import resolve, scoped
    host = get_target("host")
    n = resolve(host, threads)
    with scoped(n):
        return _verify(names, frontends, host, seed=seed, tolerance=tolerance, threads=n,
                       layout=layout, conv_rule=conv_rule, on_row=on_row)


def check_options(tolerance: float, layout: str | None, conv_rule: str | None) -> None:
    """Refuse a tolerance that is no bound (negative, nan, inf: every row would fail, or none)
    and a conv rule without the layout it applies to."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) \
            or not math.isfinite(tolerance) or tolerance < 0:
        raise TvmflowError(f"--tolerance must be a finite number >= 0, got {tolerance!r}")
    if conv_rule is not None and layout != "NCHWc":
        raise TvmflowError(f"--conv-rule needs --layout NCHWc"
                           + (f", not {layout}" if layout else ""))


def _verify(variants, frontends, host, *, seed: int, tolerance: float, threads: int,
            layout: str | None, on_row, conv_rule: str | None = None) -> VerifyResult:
    from tvmflow.adapter import pipeline
    from tvmflow.adapter.runtime import local_session
    from tvmflow.ir.frontend import import_model
    from tvmflow.spec.registry import get_spec
    target = host.tvm_target()
    session = local_session()
    measured = session.use_threads(threads)
    rows = []
    labels: list[str] = []
    for name in variants:
        spec = get_spec(name)
        own = getattr(spec, "scheme", None) == "onnx"     # an ONNX file: its own frontend only
        for fe in (["onnx"] if own and "onnx" in frontends else [] if own else frontends):
            model = import_model(spec, frontend=fe, seed=seed)
            options = pipeline.options_for(target, layout, conv_rule=conv_rule, mod=model.mod)
            if options.label not in labels:
                labels.append(options.label)
            x = model.example_input()
            out = session.load(pipeline.build(model.mod, target, None, options=options)[0]).infer(x)
            ref = model.reference(x)
            if out.shape != ref.shape:
                raise TvmflowError(f"{name} via {fe}: TVM output shape {out.shape} != PyTorch {ref.shape}")
            err = float(np.max(np.abs(out - ref)))
            row = VerifyRow(name, fe, err, bool(err <= tolerance))
            rows.append(row)
            if on_row:
                on_row(row)
    return VerifyResult(rows, tolerance, host.target, measured, "; ".join(labels))
