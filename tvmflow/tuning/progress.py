"""The terminal side of ``tvmflow tune``: a progress bar, the per-task table, the --adapt lines."""

from __future__ import annotations

from typing import Any

from tvmflow.tuning.results import TuneResult


class TuneProgress:
    """A rich progress bar: trials done / budget, current task, best estimated latency."""

    def __init__(self, console=None):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)
        from tvmflow.ui import console as default_console
        self.progress = Progress(TextColumn("[bold]{task.fields[label]}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                                 TimeElapsedColumn(), console=console or default_console,
                                 transient=False)
        self.task = None

    def start(self, info: dict[str, Any], label: str) -> None:
        est = sum(info["best_ms"].get(n, 0) * info["weights"][n] for n in info["tasks"]) or None
        self.progress.start()
        self.task = self.progress.add_task("tune", total=info["budget"], completed=info["done"],
                                           label=label, status=self._status("-", est, None))

    @staticmethod
    def _status(task: str, est: float | None, tuned: str | None) -> str:
        e = f"{est:.3f} ms" if est else "n/a"
        t = f" ({tuned} tasks)" if tuned else ""
        return f"task {task[:38]:38s} best est. {e}{t}"

    def batch(self, info: dict[str, Any]) -> None:
        self.progress.update(self.task, completed=min(info["done"], info["budget"]),
                             status=self._status(info["task_name"], info["est_total_ms"],
                                                 f"{info['tuned_tasks']}/{info['n_tasks']}"))

    def stop(self) -> None:
        self.progress.stop()


def adapt_message(info: dict[str, Any]) -> str:
    """The terminal lines for what ``--adapt`` did."""
    if info.get("skipped"):
        return f"adapt: {info['cpu']} set {info['path']}: {info['skipped']}; nothing re-measured"

    def fmt(v):
        return "n/a" if v is None else f"{v:.3f} ms"
    lines = [f"adapted {info['records']} records of {info['cpu']} ({info['path']}), the best "
             f"{info['top_k']} per task, re-measured on {info['running_on']}: {info['tasks']}/"
             f"{info['n_tasks']} tasks"
             + (f", {info['failed']} records failed here" if info.get("failed") else ""),
             f"  est. total of those tasks: {fmt(info['est_source_ms'])} as measured on "
             f"{info['cpu']} -> {fmt(info['est_here_ms'])} re-measured on {info['running_on']}",
             f"  est. total of this log: before {fmt(info['est_log_before_ms'])} -> after "
             f"{fmt(info['est_log_after_ms'])}"]
    return "\n".join(lines)


def print_task_table(res: TuneResult) -> None:
    from tvmflow.ui import console, print_table
    rows = [[t.name, t.weight, t.trials, "-" if t.best_ms is None else f"{t.best_ms:.4f}",
             "-" if t.weighted_ms is None else f"{t.weighted_ms:.4f}"] for t in res.tasks]
    est = res.est_total_ms
    rows.append(["total", "", res.trials_total, "", "-" if est is None else f"{est:.4f}"])
    print_table(f"{res.target}/{res.variant}: {res.trials_run} trials this run "
                f"({res.valid} valid, {res.trials_per_min:.0f}/min), {res.trials_total} in the log",
                ["task", "weight", "trials", "best ms", "weighted ms"], rows)
    thr = res.threads or {}
    if thr.get("tvm") is not None:
        console.print(f"TVM threads where the candidates ran: {thr['tvm']}"
                      + (f" (Warning: {thr['requested']} were asked for)"
                         if thr.get("requested") not in (None, thr["tvm"]) else ""),
                      highlight=False)
    console.print(f"log: {res.log_dir}")
