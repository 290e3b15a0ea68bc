"""``tune --adapt``: re-measure another CPU's best records here, recorded as an
:class:`~tvmflow.tuning.meta.Adaptation` in the log's meta.json (see :mod:`tvmflow.tuning.tune`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tvmflow.tuning.log import db_sha256, now_iso
from tvmflow.tuning.meta import Adaptation, ScheduleMeta


def already_adapted(meta: ScheduleMeta, source_dir: Path) -> bool:
    """Whether the log already holds these very records, re-measured to the end."""
    sha = db_sha256(source_dir)
    return any(a.sha256 == sha and not a.interrupted for a in meta.adapted_from)


def adapt(tasks, source, log_dir: Path, tgt, preset, *, builder, runner, top_k: int,
          meta: ScheduleMeta, on_task=None) -> Adaptation:
    """Re-measure ``source``'s (``(dir, cpu, ScheduleMeta)``) best records here; update
    ``meta.best_ms`` and append to ``meta.adapted_from`` (also when interrupted: what was
    committed is recorded, marked ``interrupted``, and a rerun adapts again)."""
    from tvmflow.adapter.adapt import remeasure
    src_dir = source[0]
    est_before = _estimate(meta)
    entries: list[dict[str, Any]] = []
    done = False
    try:
        remeasure(tasks, str(src_dir), str(log_dir), tgt, builder=builder, runner=runner,
                  top_k=top_k, on_task=on_task, out=entries)
        done = True
    finally:
        info = _summary(entries, source, preset, meta, top_k, est_before)
        info.interrupted = not done
        meta.adapted_from.append(info)
    return info


def _estimate(meta: ScheduleMeta) -> float | None:
    known = [n for n in meta.tasks if meta.best_ms.get(n)]
    if not known:
        return None
    return round(sum(meta.best_ms[n] * meta.weights[n] for n in known), 4)


def _summary(entries, source, preset, meta: ScheduleMeta, top_k: int,
             est_before: float | None) -> Adaptation:
    src_dir, src_cpu, src_meta = source
    task_records: dict[str, int] = {}
    est_there = est_here = 0.0
    errors: list[str] = []
    for e in entries:
        errors += e["errors"]
        here = [m for m in e["measured_s"] if m is not None]
        if not here:
            continue
        there = [s for s in e["source_s"] if s is not None]
        name = e["task_name"]
        task_records[name] = e["committed"]
        est_here += e["weight"] * min(here) * 1e3
        est_there += e["weight"] * (min(there) if there else min(here)) * 1e3
        if min(here) * 1e3 < meta.best_ms.get(name, float("inf")):
            meta.best_ms[name] = min(here) * 1e3
    return Adaptation(
        cpu=src_cpu, path=str(src_dir), sha256=db_sha256(src_dir), running_on=preset.cpu_key,
        top_k=top_k, records=sum(task_records.values()),
        failed=sum(e["failed"] for e in entries), errors=errors[:5], tasks=len(task_records),
        n_tasks=len(meta.tasks), source_trials=src_meta.trials,
        est_source_ms=round(est_there, 4) if task_records else None,
        est_here_ms=round(est_here, 4) if task_records else None,
        est_log_before_ms=est_before, est_log_after_ms=_estimate(meta),
        task_records=task_records, when=now_iso())
