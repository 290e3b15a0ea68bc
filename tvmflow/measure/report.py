"""The benchmark report: ONE object, every output format derived from it.

:class:`BenchReport` holds the environment, the options, and per variant the raw latency
samples of TVM and of each baseline, the first-run latencies and the output check.  Every
output comes from it: :meth:`~BenchReport.to_table` (rich), :meth:`~BenchReport.to_json`
(with raw samples), :meth:`~BenchReport.to_csv`, :meth:`~BenchReport.to_markdown`,
:meth:`~BenchReport.to_png` (matplotlib, Agg) and :meth:`~BenchReport.save` (all of them into
a directory, refusing to overwrite without ``force``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tvmflow.errors import TvmflowError
from tvmflow.measure.baselines import LABELS, SHORT
from tvmflow.measure.stats import CV_HINT, CV_WARN, Latency, RatioCI, cv_warning, ratio_ci

FORMAT = 1
OUTPUT_FILES = {"json": "report.json", "csv": "report.csv", "md": "report.md", "png": "report.png"}
PARTIAL_FILE = "report.partial.json"
REFERENCE = "original"
ALIGNMENT = ("pruned-a8", "pruned")     # (aligned, unaligned)
# keys of environment["threads"] (tvmflow.threads.REPORT_KEYS) -> labels
THREAD_LABELS = {"tvm": "TVM", "pytorch": "PyTorch eager", "onnxruntime": "ONNX Runtime"}


def _ms(seconds: float | None, digits: int = 3) -> str:
    return "-" if seconds is None or not math.isfinite(seconds) else f"{seconds * 1e3:.{digits}f}"


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


def _tuned_alike(a: "VariantResult", b: "VariantResult", tol: float = 0.05) -> bool:
    """Same task coverage and trial budgets within ``tol`` (a tune overshoots its budget by
    a batch's stragglers, so 641 and 642 trials are alike; 144 and 768 are not)."""
    if a.coverage != b.coverage or (a.trials is None) != (b.trials is None):
        return False
    if a.trials is None:
        return True
    return abs(a.trials - b.trials) <= tol * max(a.trials, b.trials)


@dataclass
class BenchReport:
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

    def thread_warnings(self) -> list[str]:
        """Runners that ran with different thread counts, or TVM with another than asked."""
        counts = self.threads
        if not counts:
            return []
        text = ", ".join(f"{THREAD_LABELS.get(k, k)} {v}" for k, v in counts.items())
        values = set()
        for v in counts.values():
            values.update(v if isinstance(v, list) else [v])
        out = []
        if len(values) > 1:
            out.append(f"the runners ran with different thread counts ({text}), so the ratios "
                       "between them also measure the parallelism; give them one count "
                       "(--threads N, or TVM_NUM_THREADS for the board's server)")
        asked, tvm = self.threads_requested, counts.get("tvm")
        if asked is not None and tvm is not None and tvm != asked and len(values) == 1:
            out.append(f"TVM ran {tvm} threads, {asked} were asked for (the device's "
                       "TVM_NUM_THREADS caps it: the pool cannot grow past it)")
        return out

    def speedup(self, r: VariantResult) -> float | None:
        ref = self.result(REFERENCE)
        if ref is None or not ref.p50() or not r.p50():
            return None
        return ref.p50() / r.p50()

    def alignment(self, runner: str = "tvm") -> RatioCI | None:
        """``p50(pruned-a8) / p50(pruned)`` with a seeded bootstrap 95 % CI."""
        a, b = (self.result(n) for n in ALIGNMENT)
        if a is None or b is None:
            return None
        la, lb = a.latency.get(runner), b.latency.get(runner)
        if la is None or lb is None or not la.n or not lb.n:
            return None
        return self.ratio(a, runner, b, runner)

    def alignment_sentence(self, runner: str = "tvm") -> str | None:
        ci = self.alignment(runner)
        if ci is None:
            return None
        aligned, plain = ALIGNMENT
        pct = (1.0 - ci.ratio) * 100.0
        how = f"{abs(pct):.1f}% {'faster' if pct > 0 else 'slower'}"
        verdict = ("significant: the 95% CI excludes 1" if ci.significant else
                   "NOT significant: the 95% CI includes 1")
        text = (f"Alignment effect ({LABELS.get(runner, runner)}): {aligned} / {plain} latency = "
                f"{ci.ratio:.3f} (95% CI {ci.lo:.3f}-{ci.hi:.3f}, bootstrap of medians, seed "
                f"{ci.seed}): {aligned} is {how} -- {verdict}.")
        a, b = self.result(aligned), self.result(plain)
        if runner == "tvm" and not _tuned_alike(a, b):
            def tuned(r):
                return f"{r.trials if r.trials is not None else 'untuned'}" + \
                    (f", {r.coverage} tasks tuned" if r.coverage else "")
            text += (f" CAUTION: the two modules are not tuned alike ({aligned}: {tuned(a)}; "
                     f"{plain}: {tuned(b)}), so this ratio also measures the tuning.")
        return text

    def warnings(self) -> list[str]:
        out = []
        cores = self.environment.get("host_cores") or 0
        loads = [self.environment.get(k) for k in ("load_avg_start", "load_avg_end")]
        worst = max((la[0] for la in loads if la), default=0.0)
        if cores and worst > cores and self.environment.get("route_mode") in ("local", "local-rpc"):
            out.append(f"the machine was busy while measuring (1-min load average up to "
                       f"{worst:.1f} on {cores} cores): other processes compete for the cores, "
                       "so latencies (PyTorch's spinning threads most) are inflated; rerun on an "
                       "idle machine before drawing conclusions")
        noisy = [f"{r.variant} [{LABELS.get(kind, kind)}] {lat.cv * 100:.1f}%"
                 for r in self.results for kind, lat in r.latency.items() if lat.unstable(CV_WARN)]
        if len(noisy) == 1:
            r, kind = next((r, k) for r in self.results for k, lat in r.latency.items()
                           if lat.unstable(CV_WARN))
            out.append(cv_warning(f"{r.variant} [{LABELS.get(kind, kind)}]", r.latency[kind]))
        elif noisy:
            out.append(f"latency varies a lot (CV > {CV_WARN * 100:.0f}%) for {', '.join(noisy)}; "
                       f"the medians are still usable, but {CV_HINT}")
        out.extend(self.thread_warnings())
        off = [r for r in self.results if r.cpu_mismatch]
        if off:
            cpus = sorted({r.schedules["cpu"] for r in off})
            here = off[0].schedules["running_on"]
            out.append(f"schedules tuned on another CPU: {', '.join(r.variant for r in off)} "
                       f"(tuned on {', '.join(cpus)}, running on {here}); no set was tuned on "
                       f"{here}, so TVM is not at full speed here: run `tvmflow tune` (or "
                       "`tvmflow tune --adapt`) on this CPU")
        for r in self.results:
            for kind, info in r.runner_info.items():
                if info.get("capped"):
                    out.append(f"{r.variant} [{LABELS.get(kind, kind)}]: {info['capped']}")
            if r.check and not r.check.get("ok", True):
                out.append(f"{r.variant}: the output differs from PyTorch "
                           f"(max abs error {r.check.get('max_abs_err')})")
        return out

    def notes(self) -> list[str]:
        """Lines every rendering states (emulation, partial results)."""
        out = []
        if self.emulated:
            out.append("EMULATED BOARD: these are emulation timings (qemu), not the board's real "
                       "speed; use them to check the flow, not to rank variants.")
        if self.partial:
            out.append(f"PARTIAL RESULTS: the run stopped early ({self.error}).")
        return out

    def columns(self) -> list[str]:
        cols = ["variant", "trials (tasks)", "TVM p50 ms", "95% CI ms", "CV %", "vs original", "MMACs",
                "k params", "GFLOP/s"]
        for k in self.baseline_kinds():
            cols += [f"{SHORT[k]} p50 ms", f"TVM/{SHORT[k]}"]
        return cols

    def baseline_kinds(self) -> list[str]:
        kinds: list[str] = []
        for r in self.results:
            for k in r.baseline_kinds():
                if k not in kinds:
                    kinds.append(k)
        return kinds

    def rows(self) -> list[list[str]]:
        rows = []
        for r in self.results:
            lat = r.latency.get("tvm")
            has = lat is not None and lat.n > 0
            lo, hi = lat.median_ci() if has else (None, None)
            sp = self.speedup(r)
            tuned = "untuned" if r.trials is None else str(r.trials)
            if r.coverage:
                tuned += f" ({r.coverage})"
            if r.cpu_mismatch:
                tuned += f", tuned on {r.schedules['cpu']}"
            row = [r.variant, tuned, _ms(lat.p50) if has else "-",
                   f"{_ms(lo)}-{_ms(hi)}" if has else "-",
                   f"{lat.cv * 100:.1f}" if has else "-",
                   f"{sp:.2f}x" if sp else "-", f"{r.macs / 1e6:.1f}", f"{r.params / 1e3:.1f}",
                   f"{r.gflops():.1f}" if r.gflops() else "-"]
            for k in self.baseline_kinds():
                p = r.p50(k)
                row += [_ms(p), f"{r.p50() / p:.2f}" if p and r.p50() else "-"]
            rows.append(row)
        return rows

    def title(self) -> str:
        env = self.environment
        where = env.get("route", "")
        return (f"tvmflow {self.command} --target {self.target}: latency per variant, batch 1 "
                f"({where})" + (" [EMULATED]" if self.emulated else "")
                + (" [PARTIAL]" if self.partial else ""))

    def first_run_lines(self) -> list[str]:
        """trtexec-style: the very first call after load, per variant and runner."""
        out = []
        for r in self.results:
            parts = []
            for k, v in r.first_run.items():
                txt = f"{LABELS.get(k, k)} {_ms(v.get('latency_s'))} ms"
                if v.get("rpc_round_trip_s"):
                    txt += f" (RPC round trip {_ms(v['rpc_round_trip_s'])} ms subtracted)"
                parts.append(txt)
            if parts:
                lat = r.latency.get("tvm")
                steady = f"; steady-state TVM p50 {_ms(lat.p50)} ms" if lat is not None and lat.n else ""
                out.append(f"First run {r.variant}: " + ", ".join(parts) + steady)
        return out

    def footer(self) -> list[str]:
        env = self.environment
        lines = list(self.notes())
        lines.append("p50 = median of single runs timed on the device (time_evaluator number=1); "
                     "95% CI = order-statistic CI of the median; TVM/X = TVM p50 / X p50 (<1: TVM "
                     "faster); GFLOP/s = 2*MACs/p50.")
        sent = self.alignment_sentence()
        if sent:
            lines.append(sent)
        for r in self.results:
            best = r.best_baseline()
            if best and r.p50():
                ci = self.ratio(r, "tvm", r, best)
                lines.append(f"{r.variant}: TVM / best baseline ({LABELS[best]}) = {ci.ratio:.2f} "
                             f"(95% CI {ci.lo:.2f}-{ci.hi:.2f})")
        if self.threads:
            asked = self.threads_requested
            lines.append("threads (as each runner's process reports them): " + ", ".join(
                f"{THREAD_LABELS.get(k, k)} {v}" for k, v in self.threads.items())
                + (f"; asked for {asked}" if asked is not None else ""))
        lines.append("environment: " + ", ".join(
            f"{k}={env[k]}" for k in ("host", "cpu", "tvm", "torch", "onnxruntime", "tvmflow")
            if env.get(k)))
        lines.append(f"target: {json.dumps(env.get('target_dict'))}; seed {self.seed}; trials: "
                     + ", ".join(f"{r.variant}={r.trials if r.trials is not None else 'untuned'}"
                                 + (f" ({r.coverage} tasks tuned)" if r.coverage else "")
                                 for r in self.results))
        if env.get("boards"):
            lines.append(f"{len(env['boards'])} boards under one key, each variant measured on "
                         "one: " + "; ".join(
                             f"{r.variant} on {r.runner_info.get('tvm', {}).get('server', '?')}"
                             for r in self.results))
        lines.extend(f"Warning: {w}" for w in self.warnings())
        return lines

    # ------------------------------------------------------------------ renderings

    def to_table(self):
        """A rich Table (print it with ``tvmflow.ui.console.print``)."""
        from rich.table import Table
        table = Table(title=self.title())
        for i, col in enumerate(self.columns()):
            table.add_column(col, justify="left" if i == 0 else "right")
        for row in self.rows():
            table.add_row(*row)
        return table

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
                "alignment": {"aligned": ALIGNMENT[0], "unaligned": ALIGNMENT[1], **ali} if ali else None,
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

    def to_csv(self) -> str:
        """One row per (variant, runner) with the statistics in milliseconds."""
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["variant", "runner", "n", "p50_ms", "p50_ci95_lo_ms", "p50_ci95_hi_ms",
                    "mean_ms", "std_ms", "min_ms", "max_ms", "p90_ms", "p95_ms", "p99_ms", "cv",
                    "first_run_ms", "macs", "params", "gflops", "speedup_vs_original",
                    "ratio_vs_runner_tvm", "emulated", "partial"])
        for r in self.results:
            for kind, lat in r.latency.items():
                if not lat.n:
                    continue
                lo, hi = lat.median_ci()
                fr = r.first_run.get(kind, {}).get("latency_s")
                tvm = r.p50()
                sp = self.speedup(r) if kind == "tvm" else None
                w.writerow([r.variant, kind, lat.n] + [f"{v * 1e3:.6f}" for v in (
                    lat.p50, lo, hi, lat.mean, lat.std, lat.min, lat.max, lat.p90, lat.p95, lat.p99)]
                    + [f"{lat.cv:.5f}", f"{fr * 1e3:.6f}" if fr is not None else "", r.macs, r.params,
                       f"{2 * r.macs / lat.p50 / 1e9:.3f}", f"{sp:.4f}" if sp else "",
                       f"{tvm / lat.p50:.4f}" if tvm else "", int(self.emulated), int(self.partial)])
        return buf.getvalue()

    def to_markdown(self) -> str:
        cols, rows = self.columns(), self.rows()
        out = [f"# {self.title()}", ""]
        for note in self.notes():
            out += [f"> **{note}**", ""]
        out.append("| " + " | ".join(cols) + " |")
        out.append("|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|")
        out += ["| " + " | ".join(row) + " |" for row in rows]
        out.append("")
        sent = self.alignment_sentence()
        if sent:
            out += [f"**{sent}**", ""]
        for kind in self.baseline_kinds():
            s = self.alignment_sentence(kind)
            if s:
                out += [f"- {s}"]
        out += ["", "## First run (very first call after load)", ""]
        out += [f"- {line}" for line in self.first_run_lines()]
        out += ["", "## Notes", ""] + [f"- {line}" for line in self.footer()[len(self.notes()):]]
        env = self.environment
        out += ["", "## Environment", "", "| key | value |", "|---|---|"]
        for k, v in env.items():
            out.append(f"| {k} | {json.dumps(v) if isinstance(v, (dict, list)) else v} |")
        out += ["", "## Options", "", "| option | value |", "|---|---|"]
        out += [f"| {k} | {v} |" for k, v in self.options.items()]
        return "\n".join(out) + "\n"

    def to_png(self, path: str | Path) -> Path:
        """Latency p50 with 95 % CI error bars per variant (TVM and baselines), MACs beside it."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np

        names = [r.variant for r in self.results]
        kinds = ["tvm", *self.baseline_kinds()]
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [3, 2]})
        xs = np.arange(len(names))
        width = 0.8 / max(len(kinds), 1)
        for i, kind in enumerate(kinds):
            p50, err_lo, err_hi = [], [], []
            for r in self.results:
                lat = r.latency.get(kind)
                if lat is None or not lat.n:
                    p50.append(np.nan); err_lo.append(0); err_hi.append(0)
                    continue
                lo, hi = lat.median_ci()
                p50.append(lat.p50 * 1e3); err_lo.append((lat.p50 - lo) * 1e3)
                err_hi.append((hi - lat.p50) * 1e3)
            ax.bar(xs + (i - (len(kinds) - 1) / 2) * width, p50, width, yerr=[err_lo, err_hi],
                   capsize=3, label=LABELS.get(kind, kind))
        ax.set_xticks(xs, names, rotation=20)
        ax.set_ylabel("latency p50 (ms), 95% CI")
        ax.set_title(f"{self.target}: latency per variant" + (" (EMULATED)" if self.emulated else ""))
        ax.legend()
        ax2.bar(xs, [r.macs / 1e6 for r in self.results], color="gray")
        ax2.set_xticks(xs, names, rotation=20)
        ax2.set_ylabel("MACs (millions)")
        ax2.set_title("MACs per inference")
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

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
