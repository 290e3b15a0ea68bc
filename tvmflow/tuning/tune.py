"""``tvmflow tune``: MetaSchedule (XGBoost cost model) into ``schedules/<target>/<cpu>/<variant>/``.

The log is the set of the CPU the tune runs on (``<cpu>``: the preset's ``cpu_key``, the
detected CPU for ``host``; recorded in meta.json as ``cpu``).

``tune(variant, target, trials=...)`` imports the variant, runs the shared pipeline's
:func:`~tvmflow.adapter.pipeline.prepare`, extracts the tasks and tunes them with tvmflow's
fast builder (:mod:`tvmflow.adapter.tune`) into the log directory's JSON database.

* ``trials`` is the budget of the log: a second tune resumes and runs ``trials - done``
  more; a tune with nothing left to do writes nothing.  ``fresh=True`` starts over, the old
  log moved aside into ``<log>.old-<timestamp>/`` (``TuneResult.moved_aside``).  Every measured candidate is appended to the database
  as it finishes, so Ctrl-C or a crash loses at most the batch in flight; a truncated last
  line is repaired before the next run.
* One tune per log directory at a time (filelock); a second one is refused with a message.
* The log is the workspace's; a set that tvmflow ships for this CPU is copied there first and
  resumed (:func:`~tvmflow.tuning.sets.seed_from_shipped`); the shipped one is never written.
* Runs measure locally, or on a board through an RPC tracker (``tracker="host:port"``,
  ``key``); for a cross target each candidate is linked into a ``.so`` by the cross compiler.
* ``adapt=True`` (or a CPU name: ``adapt="emeraldrapids"``) first re-measures the best
  ``adapt_top_k`` records per task of another CPU's set (the nearest one, or the named one)
  on this CPU and commits them, with their new run times and this CPU's target, to this
  CPU's log (:mod:`tvmflow.adapter.adapt`); the search then warm-starts from them
  (MetaSchedule's evolutionary search seeds its population with the database's best records
  of each task) and the scheduler treats the adapted tasks as tuned for one round, so the
  budget goes on where it pays.  Re-measurements are not search trials: they are not counted
  in ``trials``; meta.json lists them under ``adapted_from``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from tvmflow.errors import TvmflowError
from tvmflow.tuning import schedules
from tvmflow.tuning.progress import TuneProgress, adapt_message, print_task_table
from tvmflow.tuning.results import TaskResult, TuneResult
from tvmflow.tuning.runners import (ALL_FAILED_STOP, boards_under_key, check_runnable,
                                    default_workers, resolve_tracker, short_error)
from tvmflow.tuning.session import TuneConfig, TuneSession, check_log_fits, resolve_options

DEFAULT_SEED = 0
DEFAULT_PER_ROUND = 32
DEFAULT_POPULATION = 256
POPULATION_ENV = "TVMFLOW_TUNE_POPULATION"
KEEP_BEST = 3
ADAPT_TOP_K = 3

__all__ = ["ADAPT_TOP_K", "ALL_FAILED_STOP", "DEFAULT_PER_ROUND", "DEFAULT_POPULATION", "DEFAULT_SEED", "KEEP_BEST",
           "TaskResult", "TuneProgress", "TuneResult", "adapt_message", "default_workers",
           "print_task_table", "resolve_tracker", "short_error", "tune", "tune_variants"]


def resolve_population(population: int | None) -> int:
    """The search population: the one given, else ``$TVMFLOW_TUNE_POPULATION``, else 256."""
    where = "--population"
    if population is None:
        raw = os.environ.get(POPULATION_ENV, "").strip()
        if not raw:
            return DEFAULT_POPULATION
        where = POPULATION_ENV
        try:
            population = int(raw)
        except ValueError:
            raise TvmflowError(f"{POPULATION_ENV} must be a whole number, got {raw!r}") from None
    if isinstance(population, bool) or not isinstance(population, int) or population < 8:
        raise TvmflowError(f"{where} must be a whole number of at least 8, got {population!r}")
    return population


def _at_least_one(**values: int | None) -> None:
    for name, value in values.items():
        if value is not None and value < 1:
            raise TvmflowError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def _make_parent(log_dir: Path) -> None:
    """The log's folder can be made (a workspace under /proc, say, cannot): one clear line."""
    try:
        log_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TvmflowError(f"cannot create the tuning log folder {log_dir.parent}: "
                           f"{exc.strerror or exc}", hint="choose another --workspace") from None


def _where_to_measure(preset, tracker, key, dry_run: bool, rpc_workers: int | None):
    """(rpc or None, runner workers), checked."""
    rpc = resolve_tracker(tracker, key)
    if dry_run and rpc is not None:
        raise TvmflowError("--dry-run measures nothing; it takes no --tracker")
    check_runnable(preset, rpc, dry_run)
    if rpc_workers is not None and rpc is None:
        raise TvmflowError("--rpc-workers counts boards at a tracker; give --tracker HOST:PORT")
    if rpc is not None:
        from tvmflow.adapter import rpc as ad_rpc
        ad_rpc.count_servers(*rpc, timeout=10)  # an unreachable tracker fails before any build
    if rpc is not None and rpc_workers is None:
        rpc_workers = boards_under_key(*rpc)
    return rpc, rpc_workers or 1


def _nothing_to_do(spec, preset, log_dir: Path, trials: int, options, dry_run: bool,
                   root: Path | None) -> TuneResult | None:
    """The log (the workspace's, else the set shipped for this CPU) already holds the budget:
    the result, with nothing written, copied or imported.  None when there is work, or a
    reason to refuse that the session gives (another target, pipeline or kind of run)."""
    src = log_dir
    if not schedules.has_log(log_dir) and root is None:
        src = dict(schedules.cpu_sets(preset.name, spec.name)).get(preset.cpu_key)
    meta = schedules.ScheduleMeta.read(src) if src is not None else None
    if meta is None or meta.trials < trials or not schedules.check(src).ok:
        return None
    try:
        check_log_fits(meta, True, src, preset, dry_run)
        resolve_options(meta, options, preset, src)
    except TvmflowError:
        return None
    return TuneResult.skipped_from(spec.name, preset.name, src, meta)


def tune(variant: str, target: str = "host", *, trials: int = 256,
         trials_per_task: int | None = None, per_round: int = DEFAULT_PER_ROUND,
         seed: int = DEFAULT_SEED, fresh: bool = False, tracker: str | None = None,
         key: str | None = None, root: Path | None = None, workers: int | None = None,
         options=None, keep_best: int | None = None, frontend: str = "torch",
         adapt: bool | str | None = None, adapt_top_k: int = ADAPT_TOP_K,
         on_adapt: Callable[[dict[str, Any]], None] | None = None,
         rpc_workers: int | None = None, on_batch: Callable[[dict[str, Any]], None] | None = None,
         on_start: Callable[[dict[str, Any]], None] | None = None,
         threads: int | None = None, dry_run: bool = False,
         population: int | None = None) -> TuneResult:
    """Tune one variant for one target preset; returns a :class:`TuneResult`.

    ``threads``: TVM's thread count in the runner that measures the candidates (default
    ``TVM_NUM_THREADS``, else the target's ``num-cores``; on a board each session sets it);
    the count measured where the candidates run is recorded in ``meta.json`` (``threads``).
    ``adapt``: True (the nearest other CPU's set) or a CPU name (see the module doc);
    ``on_adapt`` receives the summary.  ``population``: the evolutionary search's population
    per round (default ``$TVMFLOW_TUNE_POPULATION``, else 256; smaller searches faster and
    explores less; recorded in meta.json).  ``workers``: builder processes (default
    :func:`default_workers`).  ``dry_run``: build every candidate but measure none (made-up
    run times); a dry-run log is marked so, and dry-run and measured records never share a
    log.  A task whose first :data:`ALL_FAILED_STOP` candidates all fail stops the tune with
    the first error (the records committed so far are kept).
    """
    from tvmflow.spec.registry import get_spec
    from tvmflow.target.presets import get_target
    from tvmflow.threads import resolve as resolve_threads
    from tvmflow.workspace import check_writable
    _at_least_one(trials=trials, per_round=per_round, workers=workers, rpc_workers=rpc_workers,
                  adapt_top_k=adapt_top_k if adapt else None)
    preset = get_target(target)
    threads = resolve_threads(preset, threads)
    if adapt and dry_run:
        raise TvmflowError("--adapt re-measures records here; --dry-run measures nothing")
    rpc, rpc_workers = _where_to_measure(preset, tracker, key, dry_run, rpc_workers)
    spec = get_spec(variant)
    log_dir = schedules.schedule_dir(preset, spec.name, root)
    check_writable(log_dir)
    if not fresh and not adapt:
        done = _nothing_to_do(spec, preset, log_dir, trials, options, dry_run, root)
        if done is not None:
            return done
    _make_parent(log_dir)
    if not fresh and not dry_run and root is None:     # shipped sets hold measured records
        schedules.seed_from_shipped(preset, spec.name, log_dir, options)
    source = schedules.adapt_source(preset, spec.name, adapt, root) if adapt else None
    cfg = TuneConfig(trials=trials, trials_per_task=trials_per_task, per_round=per_round,
                     seed=seed, fresh=fresh, rpc=rpc, workers=workers or default_workers(preset),
                     options=options, keep_best=keep_best, frontend=frontend, adapt=source,
                     adapt_top_k=adapt_top_k, rpc_workers=rpc_workers, threads=threads,
                     dry_run=dry_run, on_batch=on_batch, on_start=on_start, on_adapt=on_adapt,
                     population=resolve_population(population))
    lk = schedules.lock(log_dir)
    try:
        return TuneSession(spec, preset, log_dir, cfg).run()
    finally:
        lk.release()


def _report(res: TuneResult, target: str, budget: int | None) -> None:
    from tvmflow.ui import console
    if res.moved_aside is not None:
        console.print(f"--fresh: the old log was moved to {res.moved_aside}", highlight=False)
    print_task_table(res)
    if res.skipped:
        console.print(f"{target}/{res.variant}: {res.trials_total} trials already done "
                      f"(budget {budget}); raise --trials to tune more", highlight=False)


def tune_variants(variants: list[str], target: str, *, quiet: bool = False, **kw) -> list[TuneResult]:
    """Tune several variants in turn, with a progress bar and a per-task table each."""
    from tvmflow.ui import console, err_console
    results = []
    name = getattr(target, "name", target)  # a preset or its name
    for v in variants:
        bar = None if quiet else TuneProgress()
        try:
            res = tune(v, target, on_start=(bar and (lambda info, v=v: bar.start(info, f"{name}/{v}"))),
                       on_batch=(bar and bar.batch),
                       on_adapt=(None if quiet else
                                 lambda info: console.print(adapt_message(info), highlight=False)),
                       **kw)
        except KeyboardInterrupt:
            d = schedules.schedule_dir(target, v, kw.get("root"))
            err_console.print(f"interrupted: {schedules.record_count(d)} records kept in {d}; "
                              "run the same command to resume", highlight=False)
            raise
        finally:
            if bar is not None and bar.task is not None:
                bar.stop()
        results.append(res)
        if not quiet:
            _report(res, name, kw.get("trials"))
    return results
