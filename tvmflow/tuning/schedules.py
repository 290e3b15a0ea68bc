"""Tuning logs: ``schedules/<target>/<cpu>/<variant>/``, one set per CPU they were tuned on.

The tuning stage's records and their one public face (``from tvmflow.tuning import schedules``):

* :mod:`tvmflow.tuning.meta` -- :class:`ScheduleMeta`, the meta.json of a log;
* :mod:`tvmflow.tuning.log` -- one log directory: integrity, repair, compact, lock,
  ``--fresh`` (moved aside), the database's sha256; no TVM;
* :mod:`tvmflow.tuning.sets` -- where sets lie and which one compile uses on this CPU;
* :mod:`tvmflow.tuning.listing` -- ``tvmflow schedules``.

This module adds what compile asks: :func:`database_info` (what would be applied, without
TVM; ``check=False`` is the cheap form a staleness check uses: meta.json and the database's
sha256) and :func:`load_for_compile` (the database itself), and what ``tune --adapt`` asks
(:func:`adapt_source`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tvmflow.errors import TvmflowError
from tvmflow.tuning.listing import list_schedules, list_schedules_report
from tvmflow.tuning.log import _read_lines  # noqa: F401  (benchmarks/tune_throughput.py)
from tvmflow.tuning.log import (DB_RECORDS, DB_WORKLOAD, FAILED_SECS, LOCK, Integrity,
                                best_per_workload, check, compact, db_sha256, has_log,
                                load_meta, lock, move_aside, now_iso, read_meta, record_count,
                                record_targets, repair, run_secs, save_meta, write_atomic,
                                write_meta)
from tvmflow.tuning.meta import META, Adaptation, ScheduleMeta
from tvmflow.tuning.sets import (SetChoice, candidates, cpu_dir, cpu_sets, legacy_dir,
                                 schedule_dir, schedule_roots, schedules_root,
                                 seed_from_shipped, select_set, target_mismatch)

__all__ = [
    "Adaptation", "DB_RECORDS", "DB_WORKLOAD", "FAILED_SECS", "Integrity", "LOCK", "META",
    "ScheduleMeta", "SetChoice", "adapt_source", "best_per_workload", "check", "compact",
    "cpu_dir", "cpu_sets", "database_info", "db_sha256", "has_log", "legacy_dir",
    "list_schedules", "list_schedules_report", "load_for_compile", "load_meta", "lock",
    "move_aside", "now_iso", "read_meta", "record_count", "record_targets", "repair",
    "run_secs", "save_meta", "schedule_dir", "schedule_roots", "schedules_root",
    "seed_from_shipped", "select_set", "target_mismatch", "write_atomic", "write_meta"]

_HINT_ARCH = ("compile refuses records tuned for another architecture or GPU (they may crash "
              "with an illegal instruction); retune with tvmflow tune")


def _check_meta(path: Path, meta: ScheduleMeta, preset, variant: str) -> None:
    """Refuse a log of another variant, or tuned for another target kind / triple / arch."""
    where = f"tuning log {path}"
    if meta.variant not in (None, variant):
        raise TvmflowError(f"{where} was tuned for variant {meta.variant!r}, not {variant!r}")
    if meta.target:
        diffs = target_mismatch(dict(preset.target), meta.target)
        if diffs:
            raise TvmflowError(f"{where} was tuned for another target: {'; '.join(diffs)}",
                               hint=_HINT_ARCH)


def _check_records(path: Path, preset, variant: str) -> Integrity:
    """Refuse a corrupt log, or one holding records tuned for another target."""
    where = f"tuning log {path}"
    integ = check(path)
    if not integ.ok:
        raise TvmflowError(f"{where} is corrupt ({integ.describe()})",
                           hint=f"run `tvmflow schedules --repair` or `tvmflow tune --target "
                                f"{preset.name} --variant {variant}` (repairs it first)")
    for rec_target in record_targets(path):
        diffs = target_mismatch(dict(preset.target), rec_target)
        if diffs:
            raise TvmflowError(f"{where} holds records tuned for another target: "
                               f"{'; '.join(diffs)}", hint=_HINT_ARCH)
    return integ


def database_info(target_preset, variant: str, root: Path | None = None, *,
                  check: bool = True) -> dict[str, Any]:
    """What :func:`load_for_compile` would apply, without opening the database (no TVM).

    ``info`` = ``{"path", "cpu", "running_on", "match"}`` and, when a set is used, ``"sha256",
    "trials", "records", "mcpu", "target", "pipeline", "tvm_version", "est_latency_ms"`` --
    plus, for the nearest set of another CPU, ``"note"`` ("tuned on emeraldrapids, running on
    znver2") and ``"why"``; without one, ``"reason"``.  Raises TvmflowError as
    :func:`load_for_compile` does.  ``check=False`` (a staleness check) reads meta.json and
    hashes the database files but does not parse every record: a database whose sha256 is
    the one a module was compiled with was checked when it was compiled.
    """
    choice = select_set(target_preset, variant, root)
    info: dict[str, Any] = {"path": str(choice.path or schedule_dir(target_preset, variant, root)),
                            "cpu": choice.cpu, "running_on": choice.running_on,
                            "match": choice.match}
    if choice.path is None:
        info["reason"] = choice.reason
        return info
    meta = load_meta(choice.path)
    _check_meta(choice.path, meta, target_preset, variant)
    records = _check_records(choice.path, target_preset, variant).records if check else meta.records
    target = meta.target or dict(target_preset.target)
    info.update(sha256=db_sha256(choice.path), trials=meta.trials or records, records=records,
                mcpu=target.get("mcpu"), target=target, pipeline=meta.pipeline,
                tvm_version=meta.tvm_version, est_latency_ms=meta.est_total_ms)
    if meta.dry_run:
        info["dry_run"] = True
    if choice.note:
        info.update(note=choice.note, why=choice.why, candidates=choice.ranked)
    return info


def load_for_compile(target_preset, variant: str, root: Path | None = None):
    """The database to apply when compiling ``variant`` for ``target_preset``.

    Returns ``(database | None, info)`` (see :func:`database_info`): None (and
    ``info["reason"]``) when no usable log exists.  The log is the set tuned on this CPU,
    else the nearest set of another CPU of the same architecture (``info["note"]`` says
    so); its records' traces are replayed for this CPU's target.  Raises TvmflowError for a
    corrupt log, or one tuned for another target kind / triple / CUDA arch or variant.
    """
    info = database_info(target_preset, variant, root)
    if not info.get("sha256"):
        return None, info
    from tvmflow.adapter.tune import open_database
    return open_database(info["path"], allow_missing=False), info


def _named_source(target_preset, variant: str, source: str, sets: dict[str, Path],
                  root: Path | None) -> str:
    listed = f"sets of {variant} for {target_preset.name}: {', '.join(sorted(sets)) or 'none'}"
    if source == target_preset.cpu_key:
        raise TvmflowError(f"--adapt {source}: that is this CPU's own set; nothing to adapt",
                           hint=f"name another CPU ({listed})")
    if source not in sets:
        raise TvmflowError(f"--adapt {source}: no set of {variant} tuned on {source} under "
                           f"{cpu_dir(target_preset, source, root).parent}", hint=listed)
    return source


def _nearest_source(target_preset, variant: str, sets: dict[str, Path],
                    root: Path | None) -> str:
    here = target_preset.cpu_key
    ranked, _paths, skipped = candidates(target_preset, variant, root, exclude=here)
    if not ranked:
        listed = f"sets of {variant} for {target_preset.name}: {', '.join(sorted(sets)) or 'none'}"
        why = f" (not usable: {'; '.join(skipped)})" if skipped else ""
        raise TvmflowError(f"--adapt: no set of {variant} tuned on another CPU for "
                           f"{target_preset.name}{why}",
                           hint=listed if any(c != here for c in sets) else None)
    return ranked[0].cpu


def adapt_source(target_preset, variant: str, source: str | bool = True,
                 root: Path | None = None) -> tuple[Path, str, ScheduleMeta]:
    """The set ``tvmflow tune --adapt`` re-measures: ``(log dir, its cpu, its meta)``.

    ``source``: True for the nearest set of another CPU (as compile would choose it), or a
    CPU name.  Refuses a corrupt set, one of another variant / target kind / triple, the
    target's own set (there is nothing to adapt), and CUDA targets (sets are per arch).
    """
    if target_preset.is_cuda:
        raise TvmflowError(f"--adapt is for CPU targets; {target_preset.name} is CUDA "
                           f"({target_preset.cpu_key}), whose schedules are per arch (thread "
                           "and shared-memory sizes)", hint=f"tune {target_preset.name} without --adapt")
    sets = dict(cpu_sets(target_preset.name, variant, root))
    if isinstance(source, str) and source not in ("", "nearest"):
        cpu = _named_source(target_preset, variant, source, sets, root)
    else:
        cpu = _nearest_source(target_preset, variant, sets, root)
    path = sets[cpu]
    meta = load_meta(path)
    _check_meta(path, meta, target_preset, variant)
    _check_records(path, target_preset, variant)
    return path, cpu, meta
