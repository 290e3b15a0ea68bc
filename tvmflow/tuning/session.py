"""One tune of one log, under its lock: :class:`TuneSession` (see :mod:`tvmflow.tuning.tune`)."""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tvmflow.errors import TvmflowError
from tvmflow.tuning import log as L
from tvmflow.tuning import runners
from tvmflow.tuning.adapting import adapt, already_adapted
from tvmflow.tuning.meta import ScheduleMeta
from tvmflow.tuning.results import TuneResult
from tvmflow.tuning.sets import target_mismatch


@dataclass
class TuneConfig:
    """What ``tune()`` was asked for, checked."""

    trials: int
    trials_per_task: int | None
    per_round: int
    seed: int
    fresh: bool
    rpc: tuple[str, int, str] | None
    workers: int
    options: Any                      # adapter.pipeline.PipelineOptions | None
    keep_best: int | None
    frontend: str
    adapt: tuple[Path, str, ScheduleMeta] | None
    adapt_top_k: int
    rpc_workers: int
    threads: int | None
    dry_run: bool
    population: int = 256
    on_batch: Callable[[dict[str, Any]], None] | None = None
    on_start: Callable[[dict[str, Any]], None] | None = None
    on_adapt: Callable[[dict[str, Any]], None] | None = None


def check_log_fits(meta: ScheduleMeta, has_records: bool, log_dir: Path, preset,
                   dry_run: bool) -> None:
    """Refuse to add to a log of the other kind (dry-run / measured) or of another target."""
    if (meta.trials or meta.variant or has_records) and meta.dry_run != dry_run:
        raise TvmflowError(f"{log_dir} holds {'dry-run' if meta.dry_run else 'measured'}"
                           f" records; a {'dry' if dry_run else 'measured'} run does not "
                           "add to them",
                           hint="pass --fresh to start over (or set TVMFLOW_SCHEDULES to "
                                "another folder for dry runs)")
    if meta.target and target_mismatch(preset.target, meta.target):
        raise TvmflowError(f"{log_dir} holds records for another target "
                           f"({meta.target}); this target is {preset.target}",
                           hint="pass --fresh to start over")


def resolve_options(meta: ScheduleMeta, options, preset, log_dir: Path, adapt_meta=None):
    """The pipeline options a tune of this log uses: ``options`` (refused when the log was
    tuned with others), else the log's, else the --adapt source's; None: the target's
    default for the model (decided once the model is imported)."""
    from tvmflow.adapter import pipeline
    if options is not None:
        options = options.resolved(preset.tvm_target())   # the NCHWc block, from the target
        if meta.pipeline and pipeline.PipelineOptions.from_json(meta.pipeline) != options:
            raise TvmflowError(f"{log_dir} was tuned with pipeline {meta.pipeline}, not "
                               f"{options.to_json()}", hint="pass --fresh to start over")
        return options
    if meta.pipeline:
        return pipeline.PipelineOptions.from_json(meta.pipeline)
    if adapt_meta is not None and adapt_meta.pipeline:
        # a new log adapted from another CPU's set: its workloads come from that pipeline
        return pipeline.PipelineOptions.from_json(adapt_meta.pipeline)
    return None


class TuneSession:
    """Tune ``spec`` for ``preset`` into ``log_dir`` (the caller holds the log's lock)."""

    def __init__(self, spec, preset, log_dir: Path, cfg: TuneConfig):
        self.spec, self.preset, self.log_dir, self.cfg = spec, preset, Path(log_dir), cfg
        self.sigint = False
        self.failed: dict[str, int] = {}          # per task never measured: failed so far
        self.failed_round: dict[str, Any] = {}
        self.t0 = time.time()

    # ---- before the search ------------------------------------------------------------
    def open_log(self) -> None:
        """--fresh (the old log moved aside), repair, and the log's meta, checked."""
        self.moved = L.move_aside(self.log_dir) if self.cfg.fresh else None
        repaired = L.repair(self.log_dir)
        self.repaired_now = not repaired.ok
        had_meta = (self.log_dir / L.META).exists()
        self.meta = L.load_meta(self.log_dir)
        check_log_fits(self.meta, L.record_count(self.log_dir) > 0, self.log_dir, self.preset,
                       self.cfg.dry_run)
        self.options = resolve_options(self.meta, self.cfg.options, self.preset, self.log_dir,
                                       self.cfg.adapt[2] if self.cfg.adapt else None)
        if not repaired.ok:
            self.meta.repaired.append(f"{L.now_iso()}: {repaired.describe()}")
        self.done = max(int(self.meta.trials), 0) if had_meta else L.record_count(self.log_dir)
        self.wall_before = float(self.meta.wall_s)
        self.result = TuneResult(self.spec.name, self.preset.name, self.log_dir, self.done, 0,
                                 self.done, 0, 0.0, moved_aside=self.moved)

    def prepare_tasks(self) -> None:
        """Import the model, run the pipeline, extract the tasks; stamp the meta."""
        from tvmflow.adapter import pipeline
        from tvmflow.adapter import tune as ad
        from tvmflow.ir.frontend import import_model
        model = import_model(self.spec.name, frontend=self.cfg.frontend)
        self.tgt = self.preset.tvm_target()
        options = self.options or pipeline.default_options(self.tgt, model.mod)
        opts = options.resolved(self.tgt)
        mod = pipeline.prepare(model.mod, self.tgt, opts)
        self.tasks = pipeline.extract_tasks(mod, self.tgt, prepared=True)
        self.names = [t.task_name for t in self.tasks]
        self._stamp(opts, ad.tvm_version())

    def _stamp(self, opts, tvm_version: str) -> None:
        m, p, cfg = self.meta, self.preset, self.cfg
        m.best_ms = {k: v for k, v in m.best_ms.items() if v}
        m.target, m.target_name, m.variant = dict(p.target), p.name, self.spec.name
        m.tvm_version, m.mcpu, m.cpu = tvm_version, p.target.get("mcpu"), p.cpu_key
        m.pipeline, m.seed, m.per_round = opts.to_json(), cfg.seed, cfg.per_round
        m.population = cfg.population
        m.n_tasks, m.tasks = len(self.tasks), list(self.names)
        m.weights = {t.task_name: int(t.weight) for t in self.tasks}
        m.frontend, m.detected, m.builders = cfg.frontend, dict(p.detected), cfg.workers
        m.measured_on = runners.measured_on(cfg.rpc, cfg.rpc_workers, cfg.dry_run)
        m.dry_run = cfg.dry_run
        m.created = m.created or L.now_iso()
        self.records_at_start = L.record_count(self.log_dir)

    # ---- bookkeeping ------------------------------------------------------------------
    def estimate(self) -> float | None:
        tuned = [n for n in self.names if self.meta.best_ms.get(n)]
        if not tuned:
            return None
        return round(sum(self.meta.best_ms[n] * self.meta.weights[n] for n in tuned), 4)

    def commit(self, interrupted: bool, wall: float) -> None:
        """meta.json after what the database holds (a batch committed by MetaSchedule but
        interrupted before our callback saw it still counts)."""
        r, m = self.result, self.meta
        records = L.record_count(self.log_dir)
        r.trials_total = max(r.trials_total, r.trials_before + records - self.records_at_start)
        m.trials, m.wall_s = r.trials_total, round(self.wall_before + wall, 1)
        m.n_tuned_tasks = sum(1 for n in self.names if m.best_ms.get(n))
        m.est_total_ms, m.records = self.estimate(), records
        m.updated, m.interrupted = L.now_iso(), interrupted
        L.save_meta(self.log_dir, m)
        r.set_tasks(m)

    def batch(self, info: dict[str, Any]) -> None:
        """MetaSchedule's callback after each measured batch (its records are committed)."""
        name, r, m = info["task_name"], self.result, self.meta
        r.trials_run += info["n"]
        r.trials_total += info["n"]
        r.valid += info["valid"]
        m.task_trials[name] = m.task_trials.get(name, 0) + info["n"]
        if info["best_s"] is not None and info["best_s"] * 1e3 < m.best_ms.get(name, float("inf")):
            m.best_ms[name] = info["best_s"] * 1e3
        r.wall_s = time.time() - self.t0
        self.commit(False, r.wall_s)  # meta.json follows the database batch by batch
        if self.cfg.on_batch:
            self.cfg.on_batch(dict(info, done=r.trials_total, budget=self.cfg.trials,
                                   est_total_ms=self.estimate(), n_tasks=len(self.names),
                                   tuned_tasks=sum(1 for n in self.names if n in m.best_ms)))
        if self.sigint:          # Ctrl-C during the batch: it is committed and counted
            raise KeyboardInterrupt
        self._stop_if_all_failed(info, name)

    def _stop_if_all_failed(self, info: dict[str, Any], name: str) -> None:
        """A task none of whose candidates ever built and ran: stop, and say why."""
        if info["n"] and not info["valid"] and name not in self.meta.best_ms:
            self.failed[name] = self.failed.get(name, 0) + info["n"]
            if self.failed[name] >= min(runners.ALL_FAILED_STOP, self.cfg.trials):
                self.failed_round.update(info, failed=self.failed[name],
                                         rounds=self.failed[name] // max(info["n"], 1))
                raise runners.AllFailed

    # ---- the search ---------------------------------------------------------------------
    @contextmanager
    def first_sigint_deferred(self):
        """The first Ctrl-C only sets a flag (raising at an arbitrary point inside TVM's C++
        can end in std::terminate); the batch callback raises right after the batch's
        records are committed.  A second Ctrl-C interrupts at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_sigint(signum, frame):
            if self.sigint:
                raise KeyboardInterrupt
            self.sigint = True
            from tvmflow.ui import err_console
            err_console.print("interrupt: stopping after the batch being measured "
                              "(Ctrl-C again to stop now)", highlight=False)
        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def adapt_first(self, builder, runner) -> None:
        cfg = self.cfg

        def stop(_entry):
            if self.sigint:           # Ctrl-C: stop after the task being re-measured
                raise KeyboardInterrupt
        try:
            info = adapt(self.tasks, cfg.adapt, self.log_dir, self.tgt, self.preset,
                         builder=builder, runner=runner, top_k=cfg.adapt_top_k,
                         meta=self.meta, on_task=stop)
            self.result.adapted = info.to_json()
        finally:
            self.records_at_start = L.record_count(self.log_dir)   # not search trials
        self.commit(False, time.time() - self.t0)
        if cfg.on_adapt:
            cfg.on_adapt(dict(self.result.adapted, log_dir=str(self.log_dir)))

    def skip_adapt_if_done(self) -> None:
        """An --adapt of records this log already re-measured does nothing."""
        src = self.cfg.adapt
        if src is None or not already_adapted(self.meta, src[0]):
            return
        self.result.adapted = {"cpu": src[1], "path": str(src[0]), "records": 0,
                               "skipped": "already adapted from these records"}
        if self.cfg.on_adapt:
            self.cfg.on_adapt(dict(self.result.adapted, log_dir=str(self.log_dir)))
        self.cfg.adapt = None

    def prior(self) -> dict[int, tuple[float | None, int]]:
        """What the log already holds per task (trials, and records adapted from another
        CPU): the scheduler resumes instead of starting over."""
        m, adapted = self.meta, self.meta.adapted_tasks()
        return {i: ((m.best_ms[n] / 1e3) if m.best_ms.get(n) else None,
                    int(m.task_trials.get(n, 0)) + adapted.get(n, 0))
                for i, n in enumerate(self.names) if m.task_trials.get(n) or adapted.get(n)}

    def run(self) -> TuneResult:
        """Open the log, adapt (--adapt), search the remaining budget; meta.json follows."""
        from tvmflow.adapter import tune as ad
        self.open_log()
        self.prepare_tasks()
        self.skip_adapt_if_done()
        remaining = self.cfg.trials - self.done
        if remaining <= 0 and self.cfg.adapt is None:
            self.result.skipped = True          # nothing to do: nothing written
            if self.repaired_now:
                self.commit(False, 0.0)
            self.result.set_tasks(self.meta)
            return self.result
        builder, runner, threads = runners.make_measurer(
            ad, self.tgt, self.preset, rpc=self.cfg.rpc, workers=self.cfg.workers,
            rpc_workers=self.cfg.rpc_workers, threads=self.cfg.threads, dry_run=self.cfg.dry_run)
        self.meta.threads = self.result.threads = threads
        self.t0 = time.time()
        interrupted = False
        try:
            with self.first_sigint_deferred():
                self._search(ad, builder, runner, remaining)
        except KeyboardInterrupt:
            interrupted = True
            raise
        except TvmflowError:
            raise
        except Exception as exc:
            if self.failed_round:
                raise runners.all_failed_error(self.failed_round, self.log_dir) from None
            # Ctrl-C may surface from inside TVM as a plain RuntimeError (its C++ loops
            # check for signals): reported as an interrupt, not a crash
            if self.sigint or "KeyboardInterrupt" in f"{type(exc).__name__}: {exc}":
                interrupted = True
                raise KeyboardInterrupt from None
            raise
        finally:
            builder.shutdown()
            self.result.interrupted = interrupted
            self.result.wall_s = time.time() - self.t0
            self.commit(interrupted, self.result.wall_s)
        if self.cfg.keep_best:
            L.compact(self.log_dir, self.cfg.keep_best)
            self.commit(False, self.result.wall_s)
        return self.result

    def _search(self, ad, builder, runner, remaining: int) -> None:
        if self.cfg.adapt is not None:
            self.adapt_first(builder, runner)
        if remaining <= 0:
            self.result.skipped = True
            return
        m = self.meta
        if self.cfg.on_start:
            self.cfg.on_start({"tasks": self.names, "budget": self.cfg.trials, "done": self.done,
                               "remaining": remaining, "log_dir": str(self.log_dir),
                               "best_ms": dict(m.best_ms), "weights": m.weights})
        ad.run_tuning(self.tasks, str(self.log_dir), trials=remaining,
                      trials_per_task=self.cfg.trials_per_task, per_round=self.cfg.per_round,
                      seed=self.cfg.seed, builder=builder, runner=runner, on_batch=self.batch,
                      prior=self.prior(), population=self.cfg.population)
