"""The lines every rendering of a :class:`~tvmflow.measure.report.BenchReport` states:
its title, the table's columns and rows, the notes, the warnings, the alignment sentence,
the first runs and the footer (:class:`ReportText`, a part of BenchReport).
"""

from __future__ import annotations

import json
import math

from tvmflow.measure.baselines import LABELS, SHORT
from tvmflow.measure.stats import CV_HINT, CV_WARN, cv_warning

REFERENCE = "original"
ALIGNMENT = ("pruned-a8", "pruned")     # (aligned, unaligned)
# keys of environment["threads"] (tvmflow.threads.REPORT_KEYS) -> labels
THREAD_LABELS = {"tvm": "TVM", "pytorch": "PyTorch eager", "onnxruntime": "ONNX Runtime"}


def _ms(seconds: float | None, digits: int = 3) -> str:
    return "-" if seconds is None or not math.isfinite(seconds) else f"{seconds * 1e3:.{digits}f}"


def _tuned_alike(a, b, tol: float = 0.05) -> bool:
    """Whether two VariantResults have the same task coverage and trial budgets within
    ``tol`` (a tune overshoots its budget by a batch's stragglers, so 641 and 642 trials are
    alike; 144 and 768 are not)."""
    if a.coverage != b.coverage or (a.trials is None) != (b.trials is None):
        return False
    if a.trials is None:
        return True
    return abs(a.trials - b.trials) <= tol * max(a.trials, b.trials)


class ReportText:
    """The text of a BenchReport (its fields and figures are :class:`BenchReport`'s)."""

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

    def alignment_sentence(self, runner: str = "tvm") -> str | None:
        ci = self.alignment(runner)
        if ci is None:
            return None
        aligned, plain = self.pair
        title = "Alignment effect" if self.pair == ALIGNMENT else "Pair effect"
        pct = (1.0 - ci.ratio) * 100.0
        how = f"{abs(pct):.1f}% {'faster' if pct > 0 else 'slower'}"
        verdict = ("significant: the 95% CI excludes 1" if ci.significant else
                   "NOT significant: the 95% CI includes 1")
        text = (f"{title} ({LABELS.get(runner, runner)}): {aligned} / {plain} latency = "
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
