"""The records of ``tvmflow profile``: per-kernel and per-layer times, and side-by-sides.

:class:`ProfileResult` is one variant's profile (its kernels, its layers with their channel
counts, the end-to-end latency in the same rounds); :class:`ProfileComparison` several
variants profiled in the same interleaved rounds, side by side per layer.  Both render as a
table (:meth:`rows`, :meth:`markdown`) and as JSON (:meth:`to_json`, :func:`write_json`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class KernelTime:
    index: int
    name: str
    layer: str
    shapes: list[list[int]]
    samples_ms: list[float]

    @property
    def median_ms(self) -> float:
        return float(np.median(self.samples_ms))

    def to_json(self) -> dict[str, Any]:
        return dict(index=self.index, name=self.name, layer=self.layer, shapes=self.shapes,
                    median_ms=self.median_ms, samples_ms=self.samples_ms)


@dataclass
class LayerTime:
    """One network layer: its channel counts and the kernels that compute it."""

    name: str
    kind: str                  # "conv" or "pool"
    cin: int
    cout: int
    groups: int
    kernel: int
    out_hw: int
    macs: int
    kernels: list[str]
    median_ms: float           # sum of its kernels' medians
    share: float = 0.0         # of the sum over all layers

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ProfileResult:
    variant: str
    target: str
    device: str
    schedules: str             # "tuned (12/12 tasks)", "default (untuned)", ...
    spec: dict[str, Any]
    kernels: list[KernelTime]
    layers: list[LayerTime]
    end_to_end_ms: list[float]
    rounds: int
    machine: dict[str, Any] = field(default_factory=dict)
    mapping_warning: str | None = None

    @property
    def end_to_end_median_ms(self) -> float:
        return float(np.median(self.end_to_end_ms))

    @property
    def kernel_sum_ms(self) -> float:
        return float(sum(k.median_ms for k in self.kernels))

    @property
    def end_to_end_best_ms(self) -> float:
        return float(min(self.end_to_end_ms))

    @property
    def kernel_best_sum_ms(self) -> float:
        """Sum of each kernel's fastest sample: with :attr:`end_to_end_best_ms`, the pair least
        disturbed by other processes on a shared machine."""
        return float(sum(min(k.samples_ms) for k in self.kernels))

    @property
    def coverage(self) -> float:
        """Sum of per-kernel medians over the end-to-end median (1.0 = all time is in kernels)."""
        return self.kernel_sum_ms / self.end_to_end_median_ms

    def layer(self, name: str) -> LayerTime:
        for row in self.layers:
            if row.name == name:
                return row
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return dict(variant=self.variant, target=self.target, device=self.device,
                    schedules=self.schedules, spec=self.spec, rounds=self.rounds,
                    end_to_end_median_ms=self.end_to_end_median_ms,
                    end_to_end_ms=self.end_to_end_ms, kernel_sum_ms=self.kernel_sum_ms,
                    end_to_end_best_ms=self.end_to_end_best_ms,
                    kernel_best_sum_ms=self.kernel_best_sum_ms,
                    coverage=self.coverage, machine=self.machine,
                    threads={"tvm": self.machine.get("threads")},
                    mapping_warning=self.mapping_warning,
                    layers=[r.to_json() for r in self.layers],
                    kernels=[k.to_json() for k in self.kernels])

    # ---- tables ----------------------------------------------------------------------------
    COLUMNS = ["layer", "cin", "cout", "groups", "k", "MMACs", "kernels", "ms", "share"]

    def rows(self) -> list[list[Any]]:
        out = [[r.name, r.cin, r.cout, r.groups if r.kind == "conv" else "-", r.kernel,
                f"{r.macs / 1e6:.2f}", len(r.kernels), f"{r.median_ms:.4f}",
                f"{100 * r.share:.1f}%"] for r in self.layers]
        out.append(["sum of layers", "", "", "", "", f"{self.spec['macs'] / 1e6:.2f}",
                    len(self.kernels), f"{self.kernel_sum_ms:.4f}", "100.0%"])
        out.append(["end to end (main)", "", "", "", "", "", "",
                    f"{self.end_to_end_median_ms:.4f}",
                    f"{100 * self.coverage:.1f}% in kernels"])
        return out

    def markdown(self) -> str:
        return _markdown(self.COLUMNS, self.rows())


@dataclass
class ProfileComparison:
    """Several variants profiled in the same interleaved rounds, side by side per layer."""

    results: list[ProfileResult]

    @property
    def variants(self) -> list[str]:
        return [r.variant for r in self.results]

    def layer_names(self) -> list[str]:
        names: list[str] = []
        for res in self.results:
            for row in res.layers:
                if row.name not in names:
                    names.append(row.name)
        return names

    def columns(self) -> list[str]:
        cols = ["layer"]
        for v in self.variants:
            cols += [f"{v} cin/cout", f"{v} ms", f"{v} share"]
        if len(self.results) == 2:
            cols.append(f"{self.variants[1]} / {self.variants[0]}")
        return cols

    def rows(self) -> list[list[Any]]:
        out = []
        for name in self.layer_names():
            row: list[Any] = [name]
            times = []
            for res in self.results:
                try:
                    layer = res.layer(name)
                except KeyError:
                    row += ["-", "-", "-"]
                    times.append(None)
                    continue
                ch = f"{layer.cin}/{layer.cout}" + (f" g{layer.groups}" if layer.groups > 1 else "")
                row += [ch, f"{layer.median_ms:.4f}", f"{100 * layer.share:.1f}%"]
                times.append(layer.median_ms)
            if len(self.results) == 2:
                row.append(f"{times[1] / times[0]:.2f}" if None not in times and times[0] else "-")
            out.append(row)
        for label, get in (("sum of layers", lambda r: r.kernel_sum_ms),
                           ("end to end (main)", lambda r: r.end_to_end_median_ms)):
            row = [label]
            vals = [get(r) for r in self.results]
            for v in vals:
                row += ["", f"{v:.4f}", ""]
            if len(vals) == 2:
                row.append(f"{vals[1] / vals[0]:.2f}")
            out.append(row)
        return out

    def markdown(self) -> str:
        return _markdown(self.columns(), self.rows())

    def to_json(self) -> dict[str, Any]:
        return dict(variants=self.variants, columns=self.columns(), rows=self.rows(),
                    results=[r.to_json() for r in self.results])


def _markdown(columns: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_json(obj, path: str | Path) -> Path:
    import json
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj.to_json(), indent=2) + "\n")
    return path
