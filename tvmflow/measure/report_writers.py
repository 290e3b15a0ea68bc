"""The renderings of a :class:`~tvmflow.measure.report.BenchReport`: a rich table, CSV,
Markdown and a PNG plot (:class:`ReportWriters`, a part of BenchReport; the JSON is the
record's own ``to_json``).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from tvmflow.measure.baselines import LABELS


class ReportWriters:
    """Each output format of a BenchReport, from its text (:class:`.report_text.ReportText`)."""

    def to_table(self):
        """A rich Table (print it with ``tvmflow.ui.console.print``)."""
        from rich.table import Table
        table = Table(title=self.title())
        for i, col in enumerate(self.columns()):
            table.add_column(col, justify="left" if i == 0 else "right")
        for row in self.rows():
            table.add_row(*row)
        return table

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
