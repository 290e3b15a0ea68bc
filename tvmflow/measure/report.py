"""The benchmark report: ONE object, every output format derived from it.

:class:`BenchReport` holds the environment, the options, and per variant the raw latency
samples of TVM and of each baseline, the first-run latencies and the output check.  Every
output comes from it: :meth:`~BenchReport.to_table` (rich), :meth:`~BenchReport.to_json`
(with raw samples), :meth:`~BenchReport.to_csv`, :meth:`~BenchReport.to_markdown`,
:meth:`~BenchReport.to_png` (matplotlib, Agg) and :meth:`~BenchReport.save` (all of them into
a directory, refusing to overwrite without ``force``).

The class is written in three modules: the record and its figures here, the lines its
renderings share in :mod:`.report_text` (:class:`~.report_text.ReportText`), the renderings
in :mod:`.report_writers` (:class:`~.report_writers.ReportWriters`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tvmflow.errors import TvmflowError
from tvmflow.measure.report_text import ALIGNMENT, REFERENCE, ReportText
from tvmflow.measure.report_writers import ReportWriters
from tvmflow.measure.stats import Latency, RatioCI, ratio_ci

FORMAT = 1
OUTPUT_FILES = {"json": "report.json", "csv": "report.csv", "md": "report.md", "png": "report.png"}
PARTIAL_FILE = "report.partial.json"


@dataclass
class VariantResult:
    """Everything measured for one variant."""

    variant: str
    macs: int
    params: int
    module: str | None = None
    trials: int | None = None
    coverage: str | None = None        # "tuned/tasks" from the sidecar
    check: dict[str, Any] = field(default_factory=dict)
    first_run: dict[str, dict[str, float]] = field(default_factory=dict)   # runner -> info
    latency: dict[str, Latency] = field(default_factory=dict)              # runner -> samples
    runner_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    # which CPU's schedule set the module was compiled with: {"cpu", "running_on", "match",
    # "pipeline"} from the sidecar (empty: no tuned schedules)
    schedules: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_mismatch(self) -> str | None:
        """"tuned on X, running on Y" when the module's schedules come from another CPU."""
        s = self.schedules
        if s.get("cpu") and s.get("running_on") and s["cpu"] != s["running_on"]:
            return f"tuned on {s['cpu']}, running on {s['running_on']}"
        return None

    def p50(self, runner: str = "tvm") -> float | None:
        lat = self.latency.get(runner)
        return lat.p50 if lat is not None and lat.n else None

    def gflops(self) -> float | None:
        p50 = self.p50()
        return 2.0 * self.macs / p50 / 1e9 if p50 else None

    def baseline_kinds(self) -> list[str]:
        return [k for k in self.latency if k != "tvm"]

    def best_baseline(self) -> str | None:
        kinds = [k for k in self.baseline_kinds() if self.p50(k)]
        return min(kinds, key=self.p50) if kinds else None

    def to_json(self, samples: bool = True) -> dict[str, Any]:
        out = {"variant": self.variant, "macs": self.macs, "params": self.params,
               "module": self.module, "trials": self.trials, "coverage": self.coverage,
               "check": self.check,
               "first_run": self.first_run, "runners": self.runner_info,
               "schedules": self.schedules,
               "latency": {k: v.to_json(samples) for k, v in self.latency.items()}}
        if self.p50() is not None:
            out["gflops"] = self.gflops()
            out["tvm_vs_baseline"] = {k: (self.p50() / self.p50(k)) for k in self.baseline_kinds()
                                      if self.p50(k)}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "VariantResult":
        return cls(variant=data["variant"], macs=int(data["macs"]), params=int(data["params"]),
                   module=data.get("module"), trials=data.get("trials"),
                   coverage=data.get("coverage"),
                   check=data.get("check") or {}, first_run=data.get("first_run") or {},
                   latency={k: Latency.from_json(v) for k, v in (data.get("latency") or {}).items()},
                   runner_info=data.get("runners") or {},
                   schedules=data.get("schedules") or {})


@dataclass
class BenchReport(ReportText, ReportWriters):
    """A ``bench`` or ``compare`` run: environment, options, results per variant."""

    command: str                       # "bench" or "compare"
    target: str
    environment: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    results: list[VariantResult] = field(default_factory=list)
    created: str = ""
    partial: bool = False
    error: str | None = None
    seed: int = 0
    per_layer: Any = None              # compare --per-layer: a tvmflow.measure.profile.ProfileComparison
    _ci_cache: dict = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ derived figures

    def ratio(self, a: VariantResult, runner_a: str, b: VariantResult, runner_b: str) -> RatioCI:
        """Bootstrap CI of p50(a, runner_a) / p50(b, runner_b), cached per sample counts."""
        la, lb = a.latency[runner_a], b.latency[runner_b]
        key = (a.variant, runner_a, la.n, b.variant, runner_b, lb.n, self.seed)
        if key not in self._ci_cache:
            self._ci_cache[key] = ratio_ci(la.samples, lb.samples, seed=self.seed)
        return self._ci_cache[key]

    def result(self, variant: str) -> VariantResult | None:
        return next((r for r in self.results if r.variant == variant), None)

    @property
    def emulated(self) -> bool:
        return bool(self.environment.get("emulated"))

    @property
    def threads(self) -> dict[str, int | list[int]]:
        """Thread count per runner (``tvm``, ``pytorch``, ``onnxruntime``) as measured in the
        process that ran it; a list when its variants (boards) disagree."""
        return dict(self.environment.get("threads") or {})

    @property
    def threads_requested(self) -> int | None:
        return self.environment.get("threads_requested")

    def speedup(self, r: VariantResult) -> float | None:
        ref = self.result(REFERENCE)
        if ref is None or not ref.p50() or not r.p50():
            return None
        return ref.p50() / r.p50()

    @property
    def pair(self) -> tuple[str, str]:
        """The two variants whose latency ratio the report gives (compare --pair A,B; by
        default the alignment pair pruned-a8, pruned)."""
        given = self.options.get("pair")
        return (str(given[0]), str(given[1])) if given else ALIGNMENT

    def alignment(self, runner: str = "tvm") -> RatioCI | None:
        """``p50(A) / p50(B)`` of :attr:`pair` with a seeded bootstrap 95 % CI."""
        a, b = (self.result(n) for n in self.pair)
        if a is None or b is None:
            return None
        la, lb = a.latency.get(runner), b.latency.get(runner)
        if la is None or lb is None or not la.n or not lb.n:
            return None
        return self.ratio(a, runner, b, runner)

    def baseline_kinds(self) -> list[str]:
        kinds: list[str] = []
        for r in self.results:
            for k in r.baseline_kinds():
                if k not in kinds:
                    kinds.append(k)
        return kinds

    def to_dict(self, samples: bool = True, derived: bool = True) -> dict[str, Any]:
        """Everything; ``derived=False`` skips the bootstrap CIs (cheap partial saves)."""
        ali = {}
        for kind in (["tvm", *self.baseline_kinds()] if derived else []):
            ci = self.alignment(kind)
            if ci is not None:
                ali[kind] = ci.to_json()
        return {"format": FORMAT, "kind": "tvmflow-bench-report", "command": self.command,
                "target": self.target, "created": self.created, "partial": self.partial,
                "error": self.error, "seed": self.seed, "emulated": self.emulated,
                "notes": self.notes(), "environment": self.environment, "options": self.options,
                "results": [r.to_json(samples) for r in self.results],
                "speedup_vs_original": {r.variant: self.speedup(r) for r in self.results},
                "alignment": {"aligned": self.pair[0], "unaligned": self.pair[1], **ali} if ali else None,
                "warnings": self.warnings()}

    def to_json(self, samples: bool = True, derived: bool = True) -> str:
        return json.dumps(self.to_dict(samples, derived), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "BenchReport":
        data = json.loads(text)
        if data.get("kind") != "tvmflow-bench-report":
            raise TvmflowError("not a tvmflow bench report")
        return cls(command=data["command"], target=data["target"],
                   environment=data.get("environment") or {}, options=data.get("options") or {},
                   results=[VariantResult.from_json(r) for r in data.get("results", [])],
                   created=data.get("created", ""), partial=bool(data.get("partial")),
                   error=data.get("error"), seed=int(data.get("seed", 0)))

    # ------------------------------------------------------------------ files

    def save(self, out_dir: str | Path, *, force: bool = False, png: bool = True) -> dict[str, Path]:
        """Write report.{json,csv,md,png} into ``out_dir``; existing files need ``force``."""
        out_dir = Path(out_dir)
        check_outputs(out_dir, force)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {k: out_dir / name for k, name in OUTPUT_FILES.items()}
        _atomic_write(paths["json"], self.to_json())
        _atomic_write(paths["csv"], self.to_csv())
        _atomic_write(paths["md"], self.to_markdown())
        if png and self.results:
            self.to_png(paths["png"])
        else:
            paths.pop("png")
        partial = out_dir / PARTIAL_FILE
        if not self.partial and partial.exists():
            partial.unlink()
        return paths

    def save_partial(self, out_dir: str | Path) -> Path:
        """Write what has been measured so far to ``report.partial.json`` (always allowed)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / PARTIAL_FILE
        _atomic_write(path, self.to_json(derived=False))
        return path


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def check_outputs(out_dir: str | Path, force: bool) -> None:
    """Refuse to overwrite report files in ``out_dir`` unless ``force``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise TvmflowError(f"output directory {out_dir} is a file")
    existing = [n for n in [*OUTPUT_FILES.values(), PARTIAL_FILE] if (out_dir / n).exists()]
    if existing and not force:
        raise TvmflowError(f"{out_dir} already holds a report ({', '.join(existing)}); "
                           "refusing to overwrite it", hint="pass --force or choose another -o")
