"""``tvmflow tune --adapt``: re-measure another CPU's best records on this CPU.

For each task, the best ``top_k`` records of the source database (tuned on another CPU) are
turned back into candidates -- MetaSchedule's ``TuningRecord.as_measure_candidate`` replays
the record's trace on its workload (``Schedule.Traced`` + ``Trace.apply_to_schedule``) --,
built for THIS CPU's target with the tune's builder (:class:`~tvmflow.adapter.tune.FastBuilder`),
run with the tune's runner, and committed to this CPU's database as new TuningRecords: the
same trace, the run time measured here, this CPU's target.  The evolutionary search then
takes part of its initial population from these records (``PickBestFromDatabase``), so the
search starts from the other CPU's best schedules instead of from random ones.

The source database is only read: a workload is looked up with ``has_workload`` before
``commit_workload`` (which appends only unknown workloads).
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Callable

FAILED_SECS = 1e9


def _mean(secs) -> float | None:
    vals = [float(s) for s in secs or []]
    if not vals:
        return None
    mean = sum(vals) / len(vals)
    return None if mean >= FAILED_SECS else mean


def _device_type(target) -> str:
    """The runner's device name for ``target`` ("cpu", "cuda"), as MetaSchedule's task
    scheduler derives it (``DLDeviceType2Str(target->GetTargetDeviceType())``)."""
    import tvm
    dev = int(target.get_target_device_type())
    names = getattr(tvm.runtime.Device, "_DEVICE_TYPE_TO_NAME", {})
    return str(names.get(dev, "cuda" if target.kind.name == "cuda" else "cpu"))


def remeasure(tasks, source_dir: str, dest_dir: str, target, *, builder, runner,
              top_k: int = 3, on_task: Callable[[dict[str, Any]], None] | None = None,
              out: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Re-measure the source's best ``top_k`` records of each task; commit them to ``dest_dir``.

    ``tasks``: the tune's ExtractedTasks (their ``dispatched[0]`` is the workload);
    ``target``: this CPU's ``tvm.target.Target``.  Returns one dict per task that had
    records: ``{"task_name", "weight", "source_s": [mean run s of each record there],
    "measured_s": [here, None when it failed], "committed", "failed", "errors"}``, appended
    to ``out`` (when given) as each task is committed, so an interrupt keeps what was done;
    ``on_task(entry)`` runs after each task (it may raise KeyboardInterrupt to stop).
    """
    from tvmflow.adapter.tune import intrin_arch, light_tensor_intrin_import, open_database
    light_tensor_intrin_import(intrin_arch(target))
    src = open_database(source_dir, allow_missing=False)
    dst = open_database(dest_dir, allow_missing=True)
    out = [] if out is None else out
    ctx = _Remeasure(target, builder, runner, dst, os.path.join(dest_dir, "logs", "tvm-native.log"))
    for task in tasks:
        mod = task.dispatched[0]
        if not src.has_workload(mod):
            continue
        records = list(src.get_top_k(src.commit_workload(mod), top_k))
        if not records:
            continue
        out.append(ctx.task(task, mod, records))
        if on_task is not None:
            on_task(out[-1])
    return out


class _Remeasure:
    """Build, run and commit the records of one task after another."""

    def __init__(self, target, builder, runner, dst, native_log: str):
        self.target, self.builder, self.runner, self.dst = target, builder, runner, dst
        self.device = _device_type(target)
        self.native_log = native_log

    def _build(self, records, entry) -> list[tuple[int, Any, str]]:
        """(record index, candidate, artifact) of each record replayed and built here."""
        from tvm.s_tir import meta_schedule as ms

        from tvmflow.adapter.tune import native_stderr_to
        cands: list[tuple[int, Any]] = []
        with native_stderr_to(self.native_log):
            for i, rec in enumerate(records):
                try:
                    cands.append((i, rec.as_measure_candidate()))
                except Exception as exc:  # the trace does not replay on this workload
                    entry["errors"].append(f"replay: {str(exc).strip().splitlines()[-1]}")
            builds = self.builder.build([ms.builder.BuilderInput(c.sch.mod, self.target)
                                         for _, c in cands])
        built = []
        for (i, cand), b in zip(cands, builds):
            if b.error_msg is not None:
                entry["errors"].append(f"build: {str(b.error_msg).strip().splitlines()[-1]}")
                continue
            built.append((i, cand, b.artifact_path))
        return built

    def task(self, task, mod, records) -> dict[str, Any]:
        from tvm.s_tir import meta_schedule as ms
        entry: dict[str, Any] = {"task_name": str(task.task_name), "weight": int(task.weight),
                                 "source_s": [_mean(r.run_secs) for r in records],
                                 "measured_s": [None] * len(records), "committed": 0,
                                 "failed": 0, "errors": []}
        built = self._build(records, entry)
        inputs = [ms.runner.RunnerInput(a, self.device, c.args_info) for _, c, a in built]
        results = [f.result() for f in self.runner.run(inputs)] if inputs else []
        workload = self.dst.commit_workload(mod)
        for (i, cand, artifact), res in zip(built, results):
            shutil.rmtree(os.path.dirname(artifact), ignore_errors=True)
            secs = [float(s) for s in (res.run_secs or [])]
            mean = _mean(secs)
            if res.error_msg is not None or mean is None:
                entry["errors"].append(f"run: {str(res.error_msg or 'no run time').strip().splitlines()[-1]}")
                continue
            self.dst.commit_tuning_record(ms.database.TuningRecord(
                records[i].trace, workload, run_secs=secs, target=self.target,
                args_info=cand.args_info))
            entry["measured_s"][i] = mean
            entry["committed"] += 1
        entry["failed"] = len(records) - entry["committed"]
        return entry
