"""Tuning logs: ``schedules/<target>/<cpu>/<variant>/``, one set per CPU they were tuned on.

``<cpu>`` is the target's :attr:`~tvmflow.target.presets.TargetPreset.cpu_key`: LLVM's name for the
CPU (``schedules/host/znver2/pruned/``, ``schedules/host/emeraldrapids/pruned/``; the host
preset's is the detected CPU), a fixed target's mcpu (``schedules/rpi4/cortex-a72/...``), the
SM arch for CUDA targets (``schedules/h100/sm_90/...``).

Each log directory holds MetaSchedule's two JSON database files (one JSON value per line)::

    database_workload.json        [structural_hash, workload]            (one per task)
    database_tuning_record.json   [workload_index, [trace, run_secs, target, args_info]]

plus ``meta.json`` (target dict, the CPU, TVM version, mcpu, pipeline options, trials done,
wall time, best estimated latency per task and in total) and ``logs/`` (MetaSchedule's own
logs, not committed).  This module reads and writes them without TVM:

* :func:`check` / :func:`repair` -- a line that is not valid JSON (a crash mid-write leaves
  a truncated last line) is found and dropped; every good record is kept.
* :func:`compact` -- keep only the best few records per workload (the shipped logs).
* :func:`lock` -- a filelock per log directory, so two tunes never write the same files.
* :func:`select_set` -- the set compile uses on this CPU: the one tuned on it, else the
  NEAREST one by :mod:`tvmflow.cpus`' ranking (never one of another architecture, never
  another CUDA arch).
* :func:`load_for_compile` -- the database compile applies, after refusing a corrupt one or
  one tuned for another target kind / triple / CUDA arch or another variant.

Records tuned on another CPU of the same architecture apply as they are: MetaSchedule's
``Database.query_tuning_record`` matches a record by its workload (the structural hash and
equality of the TIR function) and ignores the target (TVM 0.27,
``src/s_tir/meta_schedule/database/database.cc``: ``DatabaseNode::QueryTuningRecord`` takes a
target and never reads it), and ``MetaScheduleApplyDatabase`` replays the record's schedule
trace on the module being compiled, which is then generated for THIS CPU's ``mcpu``.  So a
set from another CPU changes which schedule is used, not which instructions are emitted.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tvmflow.errors import TvmflowError
from tvmflow.workspace import Workspace, search_dirs

DB_WORKLOAD = "database_workload.json"
DB_RECORDS = "database_tuning_record.json"
META = "meta.json"
LOCK = ".tune.lock"
FAILED_SECS = 1e9
# what a log must share with the target it is applied to (the CPU -- mcpu -- may differ, but
# never its architecture: see _target_mismatch)
TARGET_KEYS = ("kind", "mtriple", "arch")


def schedules_root() -> Path:
    """Where ``tune`` writes: the workspace's ``schedules/``."""
    return Workspace.current().schedules


def schedule_roots(root: Path | None = None) -> list[Path]:
    """Where logs are read from, first wins: ``root`` alone when given, else the workspace's
    ``schedules/`` and then the shipped sets."""
    if root is not None:
        return [Path(root)]
    return search_dirs("schedules")


def _preset(target):
    if isinstance(target, str):
        from tvmflow.target.presets import get_target
        return get_target(target)
    return target


def cpu_dir(target, cpu: str, root: Path | None = None) -> Path:
    """``<root>/<target>/<cpu>``: the sets tuned on one CPU."""
    name = target if isinstance(target, str) else target.name
    return Path(root or schedules_root()) / name / cpu


def schedule_dir(target, variant: str, root: Path | None = None, *, cpu: str | None = None) -> Path:
    """``<root>/<target>/<cpu>/<variant>``; ``cpu`` defaults to the target's own
    (:attr:`~tvmflow.target.presets.TargetPreset.cpu_key`, the running CPU for ``host``): the log
    ``tvmflow tune`` writes.  ``target``: a preset or its name."""
    if cpu is None:
        cpu = _preset(target).cpu_key
    return cpu_dir(target, cpu, root) / variant


def _is_log_dir(d: Path) -> bool:
    return (d / DB_RECORDS).exists() or (d / META).exists()


def cpu_sets(target_name: str, variant: str, root: Path | None = None) -> list[tuple[str, Path]]:
    """``(cpu, log dir)`` of every set of ``variant`` for the target, by CPU name."""
    found: dict[str, Path] = {}
    for base in schedule_roots(root):
        tdir = base / target_name
        if not tdir.is_dir():
            continue
        for cdir in sorted(p for p in tdir.iterdir() if p.is_dir()):
            if _is_log_dir(cdir):        # an old-layout <target>/<variant>/ log, not a CPU
                continue
            if (cdir / variant / DB_RECORDS).exists():
                found.setdefault(cdir.name, cdir / variant)
    return sorted(found.items())


def seed_from_shipped(preset, variant: str, log_dir: Path) -> Path | None:
    """A tune of a set that tvmflow ships for this CPU, and that the workspace does not have
    yet, resumes from a copy of the shipped set in the workspace (the shipped one is never
    written).  Returns the shipped set copied, or None."""
    import shutil
    from tvmflow.workspace import is_shipped
    if log_dir.exists():
        return None
    shipped = dict(cpu_sets(preset.name, variant)).get(preset.cpu_key)
    if shipped is None or not is_shipped(shipped):
        return None
    log_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = log_dir.with_name(f".{log_dir.name}.copy")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(shipped, tmp, ignore=shutil.ignore_patterns("logs", ".tune.lock", "*.tmp"))
    os.replace(tmp, log_dir)
    return shipped


def legacy_dir(target_name: str, variant: str, root: Path | None = None) -> Path | None:
    """An old-layout log ``<root>/<target>/<variant>/`` (before logs were kept per CPU)."""
    for base in schedule_roots(root):
        d = base / target_name / variant
        if _is_log_dir(d):
            return d
    return None


# --------------------------------------------------------------------------- reading


def _read_lines(path: Path) -> tuple[list[Any], list[int]]:
    """(parsed values, 1-based numbers of bad lines) of a JSON-lines file."""
    good, bad = [], []
    if not path.exists():
        return good, bad
    with open(path, "rb") as fh:
        for i, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                good.append(json.loads(raw))
            except ValueError:
                bad.append(i)
    return good, bad


def _valid_record(rec: Any, n_workloads: int) -> bool:
    return (isinstance(rec, list) and len(rec) == 2 and isinstance(rec[0], int)
            and 0 <= rec[0] < n_workloads and isinstance(rec[1], list) and len(rec[1]) >= 3)


def run_secs(rec: list) -> float:
    secs = rec[1][1]
    if not secs:
        return float("inf")
    mean = sum(float(s) for s in secs) / len(secs)
    return float("inf") if mean >= FAILED_SECS else mean


@dataclass
class Integrity:
    path: Path
    workloads: int
    records: int
    bad_workload_lines: list[int]
    bad_record_lines: list[int]

    @property
    def ok(self) -> bool:
        return not self.bad_workload_lines and not self.bad_record_lines

    def describe(self) -> str:
        parts = []
        if self.bad_workload_lines:
            parts.append(f"{DB_WORKLOAD} lines {self.bad_workload_lines}")
        if self.bad_record_lines:
            parts.append(f"{DB_RECORDS} lines {self.bad_record_lines}")
        return "corrupt " + ", ".join(parts) if parts else "ok"


def check(log_dir: Path) -> Integrity:
    """Parse both database files; report lines that are not valid."""
    log_dir = Path(log_dir)
    wls, bad_w = _read_lines(log_dir / DB_WORKLOAD)
    bad_w += [i + 1 for i, w in enumerate(wls) if not (isinstance(w, list) and len(w) == 2)]
    recs, bad_r = _read_lines(log_dir / DB_RECORDS)
    # a record pointing at a missing workload is bad too (line numbers are approximate
    # when unparsable lines precede it)
    n_w = len(wls)
    bad_r += [-(i + 1) for i, r in enumerate(recs) if not _valid_record(r, n_w)]
    return Integrity(log_dir, len(wls), sum(1 for r in recs if _valid_record(r, n_w)),
                     sorted(bad_w), bad_r)


def _atomic_write_lines(path: Path, values: list[Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        for v in values:
            fh.write(json.dumps(v, separators=(",", ":")) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def repair(log_dir: Path) -> Integrity:
    """Drop unparsable lines (keeping every good record); returns the state before.

    Workloads are only ever appended, so a bad workload line can only be the last one; the
    records that point past the good workloads are dropped with it.
    """
    log_dir = Path(log_dir)
    before = check(log_dir)
    if before.ok:
        return before
    wls, _ = _read_lines(log_dir / DB_WORKLOAD)
    wls = [w for w in wls if isinstance(w, list) and len(w) == 2]
    recs, _ = _read_lines(log_dir / DB_RECORDS)
    recs = [r for r in recs if _valid_record(r, len(wls))]
    _atomic_write_lines(log_dir / DB_WORKLOAD, wls)
    _atomic_write_lines(log_dir / DB_RECORDS, recs)
    return before


def compact(log_dir: Path, keep: int = 3) -> tuple[int, int]:
    """Keep the best ``keep`` valid records per workload; returns (before, after)."""
    log_dir = Path(log_dir)
    repair(log_dir)
    wls, _ = _read_lines(log_dir / DB_WORKLOAD)
    recs, _ = _read_lines(log_dir / DB_RECORDS)
    by_wl: dict[int, list] = {}
    for r in recs:
        if run_secs(r) != float("inf"):
            by_wl.setdefault(r[0], []).append(r)
    kept = []
    for idx in sorted(by_wl):
        kept += sorted(by_wl[idx], key=run_secs)[:keep]
    _atomic_write_lines(log_dir / DB_RECORDS, kept)
    return len(recs), len(kept)


def best_per_workload(log_dir: Path) -> dict[int, float]:
    recs, _ = _read_lines(Path(log_dir) / DB_RECORDS)
    best: dict[int, float] = {}
    for r in recs:
        s = run_secs(r)
        if s != float("inf") and s < best.get(r[0], float("inf")):
            best[r[0]] = s
    return best


def record_count(log_dir: Path) -> int:
    recs, _ = _read_lines(Path(log_dir) / DB_RECORDS)
    return len(recs)


def record_targets(log_dir: Path) -> list[dict[str, Any]]:
    """The distinct target dicts the records were tuned for."""
    recs, _ = _read_lines(Path(log_dir) / DB_RECORDS)
    seen, out = set(), []
    for r in recs:
        if not (isinstance(r, list) and len(r) == 2 and isinstance(r[1], list) and len(r[1]) >= 3):
            continue
        t = r[1][2]
        key = json.dumps(t, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(t if isinstance(t, dict) else {"raw": t})
    return out


def db_sha256(log_dir: Path) -> str:
    h = hashlib.sha256()
    for name in (DB_WORKLOAD, DB_RECORDS):
        p = Path(log_dir) / name
        h.update(name.encode())
        if p.exists():
            h.update(p.read_bytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- meta


def read_meta(log_dir: Path) -> dict[str, Any]:
    p = Path(log_dir) / META
    if not p.exists():
        return {}
    try:
        return json.loads(p.read_text())
    except ValueError as exc:
        raise TvmflowError(f"corrupt {p}: {exc}", hint="delete it or run tvmflow tune --fresh") from None


def write_meta(log_dir: Path, meta: dict[str, Any]) -> None:
    p = Path(log_dir) / META
    tmp = p.with_name(META + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, p)


def lock(log_dir: Path, wait: float = 0.0):
    """A filelock for one log directory; raises TvmflowError when another tune holds it."""
    import filelock
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    lk = filelock.FileLock(str(log_dir / LOCK))
    try:
        lk.acquire(timeout=wait)
    except filelock.Timeout:
        holder = ""
        raise TvmflowError(f"another tune is writing {log_dir} (lock {log_dir / LOCK} is held{holder})",
                           hint="wait for it to finish, or tune another target/variant") from None
    return lk


# --------------------------------------------------------------------------- listing


def _row(target: str, cpu: str | None, vdir: Path) -> dict[str, Any]:
    try:
        meta = read_meta(vdir)
    except TvmflowError:
        meta = {}
    integ = check(vdir)
    return {"target": target, "cpu": cpu, "variant": vdir.name, "path": str(vdir),
            "trials": meta.get("trials", 0), "records": integ.records,
            "workloads": integ.workloads, "mcpu": meta.get("mcpu"),
            "updated": meta.get("updated"),
            "est_latency_ms": meta.get("est_total_ms"),
            "tasks": meta.get("n_tasks"), "tuned_tasks": meta.get("n_tuned_tasks"),
            "adapted_from": [a.get("cpu") for a in meta.get("adapted_from") or []],
            "integrity": integ.describe()}


def list_schedules(root: Path | None = None, *, here: bool = False) -> list[dict[str, Any]]:
    """Every ``<target>/<cpu>/<variant>`` log under the schedules root.

    Each row names its ``cpu``; an old-layout ``<target>/<variant>/`` log is listed with
    ``cpu`` None and ``"layout": "old"`` (compile ignores it: move it under its CPU).  With
    ``here``, rows also say what compile on this machine does with them: ``"used_here"`` is
    ``"exact"`` (tuned on this CPU), ``"nearest"`` (no set for this CPU; this is the nearest)
    or None, and ``"running_on"`` is the target's CPU here.
    """
    out = []
    for base in schedule_roots(root):
        if base.is_dir():
            out += _rows_under(base)
    if here:
        _mark_used_here(out, root)
    return out


def _rows_under(base: Path) -> list[dict[str, Any]]:
    from tvmflow.workspace import is_shipped
    source = "shipped" if is_shipped(base) else "workspace"
    out = []
    for tdir in sorted(p for p in base.iterdir() if p.is_dir()):
        for cdir in sorted(p for p in tdir.iterdir() if p.is_dir()):
            if _is_log_dir(cdir):
                row = _row(tdir.name, None, cdir)
                row["layout"] = "old"
                row["integrity"] += (f"; old layout: move it to {tdir.name}/<cpu>/{cdir.name}/ "
                                     "(compile ignores it)")
                out.append({**row, "source": source})
                continue
            for vdir in sorted(p for p in cdir.iterdir() if p.is_dir()):
                if _is_log_dir(vdir):
                    out.append({**_row(tdir.name, cdir.name, vdir), "source": source})
    return out


def _mark_used_here(rows: list[dict[str, Any]], root: Path) -> None:
    from tvmflow.target.presets import get_target
    presets: dict[str, Any] = {}
    for row in rows:
        row.setdefault("used_here", None)
        name = row["target"]
        if name not in presets:
            try:
                presets[name] = get_target(name)
            except TvmflowError:
                presets[name] = None
        preset = presets[name]
        if preset is None or row["cpu"] is None:
            continue
        row["running_on"] = preset.cpu_key
        try:
            choice = select_set(preset, row["variant"], root)
        except TvmflowError:
            continue
        if choice.path is not None and Path(choice.path) == Path(row["path"]):
            row["used_here"] = choice.match


# --------------------------------------------------------------------------- choosing a set


def _triple_arch(target: dict[str, Any]) -> str:
    arch = str(target.get("mtriple") or "x86_64").split("-")[0].lower()
    return {"arm64": "aarch64", "amd64": "x86_64"}.get(arch, arch)


def _target_mismatch(want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """Why records tuned for target ``got`` must not be applied to target ``want``.

    The kind, the triple and the CUDA arch must agree.  The CPU (mcpu) may differ -- the
    traces are replayed and the code generated for ``want``'s mcpu -- but not its
    architecture: an mcpu of another architecture (``cortex-a72`` records in an x86 log) is
    refused too.
    """
    diffs = []
    for k in TARGET_KEYS:
        a, b = want.get(k), got.get(k)
        if k == "mtriple" and not a and not b:
            continue
        if (a or None) != (b or None):
            diffs.append(f"{k} {b!r} (this target: {a!r})")
    mcpu = got.get("mcpu")
    if not diffs and mcpu and want.get("kind") == "llvm":
        from tvmflow.target.cpus import cpu_traits
        arch, here = cpu_traits(str(mcpu)).arch, _triple_arch(want)
        if arch and arch != here:
            diffs.append(f"mcpu {mcpu!r} is an {arch} CPU (this target: {here})")
    return diffs


@dataclass
class SetChoice:
    """Which set compile uses for a target + variant on this CPU."""

    running_on: str                  # the target's CPU here (TargetPreset.cpu_key)
    path: Path | None = None         # None: no usable set
    cpu: str | None = None           # the CPU the set was tuned on
    match: str | None = None         # "exact" | "nearest" | None
    why: str = ""                    # how the two CPUs differ (nearest)
    ranked: list[str] = field(default_factory=list)     # the candidates, nearest first
    skipped: list[str] = field(default_factory=list)    # sets never used, and why
    reason: str | None = None        # why there is none

    @property
    def note(self) -> str | None:
        if self.match != "nearest":
            return None
        return f"tuned on {self.cpu}, running on {self.running_on}"


def _set_meta(path: Path) -> dict[str, Any]:
    try:
        return read_meta(path)
    except TvmflowError:
        return {}


def _candidates(preset, variant: str, root: Path | None, exclude: str | None):
    """(ranked Candidates, {cpu: path}, skipped reasons) of the sets of other CPUs."""
    from tvmflow.target.cpus import Candidate, cpu_traits, cross_arch, isa_from_meta, rank
    here = cpu_traits(preset.cpu_key, preset.cpu_isa)
    cands, paths, skipped = [], {}, []
    for cpu, path in cpu_sets(preset.name, variant, root):
        if cpu == exclude:
            continue
        meta = _set_meta(path)
        tuned_for = meta.get("target")
        diffs = _target_mismatch(preset.target, tuned_for) if tuned_for else []
        if diffs:
            skipped.append(f"{cpu}: tuned for another target ({'; '.join(diffs)})")
            continue
        meta_cpu = meta.get("cpu") or (meta.get("detected") or {}).get("llvm_cpu")
        c = Candidate(cpu, int(meta.get("trials") or 0),
                      isa_from_meta(meta) if meta_cpu == cpu else None)
        if cross_arch(here, cpu_traits(c.cpu, c.isa)):
            skipped.append(f"{cpu}: another architecture ({cpu_traits(c.cpu, c.isa).arch}, this "
                           f"target: {here.arch})")
            continue
        cands.append(c)
        paths[cpu] = path
    return rank(here, cands), paths, skipped


def select_set(preset, variant: str, root: Path | None = None) -> SetChoice:
    """The set of ``variant`` compile uses for ``preset`` on this CPU.

    The set tuned on this CPU (``preset.cpu_key``) when there is one; otherwise, for CPU
    targets, the nearest of the other CPUs' sets by :func:`tvmflow.target.cpus.rank` (same vector
    ISA width, then same vendor/family, then closest generation, then most trials).  Sets
    of another architecture or target kind/triple are never candidates; CUDA sets are not
    carried across archs (a schedule's thread and shared-memory sizes are the arch's).
    """
    here = preset.cpu_key
    sets = dict(cpu_sets(preset.name, variant, root))
    own = schedule_dir(preset, variant, root)
    choice = SetChoice(running_on=here)
    if here in sets:
        choice.path, choice.cpu, choice.match = sets[here], here, "exact"
        return choice
    if preset.is_cuda:
        others = sorted(sets)
        choice.reason = (f"no tuning log at {own}" + (
            f" (sets for {', '.join(others)} exist; CUDA schedules are not carried across "
            "archs)" if others else ""))
        return choice
    ranked, paths, choice.skipped = _candidates(preset, variant, root, exclude=here)
    choice.ranked = [c.cpu for c in ranked]
    if not ranked:
        choice.reason = f"no tuning log at {own}"
        if choice.skipped:
            choice.reason += f" (not usable: {'; '.join(choice.skipped)})"
        old = legacy_dir(preset.name, variant, root)
        if old is not None:
            choice.reason += (f"; the old-layout log {old} is ignored: move it to "
                              f"{cpu_dir(preset, '<cpu>', root)}/{variant}/")
        return choice
    from tvmflow.target.cpus import cpu_traits, why_near
    best = ranked[0]
    choice.path, choice.cpu, choice.match = paths[best.cpu], best.cpu, "nearest"
    choice.why = why_near(cpu_traits(here, preset.cpu_isa), cpu_traits(best.cpu, best.isa))
    return choice


def _validate(path: Path, preset, variant: str) -> tuple[dict[str, Any], Integrity]:
    """Refuse a corrupt log, or one tuned for another variant / target kind, triple, arch."""
    where = f"tuning log {path}"
    integ = check(path)
    if not integ.ok:
        raise TvmflowError(f"{where} is corrupt ({integ.describe()})",
                           hint=f"run `tvmflow schedules --repair` or `tvmflow tune --target "
                                f"{preset.name} --variant {variant}` (repairs it first)")
    meta = read_meta(path)
    if meta.get("variant") not in (None, variant):
        raise TvmflowError(f"{where} was tuned for variant {meta['variant']!r}, not {variant!r}")
    want = dict(preset.target)
    hint = ("compile refuses records tuned for another architecture or GPU (they may crash "
            "with an illegal instruction); retune with tvmflow tune")
    if meta.get("target"):
        diffs = _target_mismatch(want, meta["target"])
        if diffs:
            raise TvmflowError(f"{where} was tuned for another target: {'; '.join(diffs)}", hint=hint)
    for rec_target in record_targets(path):
        diffs = _target_mismatch(want, rec_target)
        if diffs:
            raise TvmflowError(f"{where} holds records tuned for another target: {'; '.join(diffs)}",
                               hint=hint)
    return meta, integ


def database_info(target_preset, variant: str, root: Path | None = None) -> dict[str, Any]:
    """What :func:`load_for_compile` would apply, without opening the database (no TVM).

    ``info`` = ``{"path", "cpu", "running_on", "match"}`` and, when a set is used, ``"sha256",
    "trials", "records", "mcpu", "target", "pipeline", "tvm_version", "est_latency_ms"`` --
    plus, for the nearest set of another CPU, ``"note"`` ("tuned on emeraldrapids, running on
    znver2") and ``"why"``; without one, ``"reason"``.  Raises TvmflowError as
    :func:`load_for_compile` does.
    """
    choice = select_set(target_preset, variant, root)
    info: dict[str, Any] = {"path": str(choice.path or schedule_dir(target_preset, variant, root)),
                            "cpu": choice.cpu, "running_on": choice.running_on,
                            "match": choice.match}
    if choice.path is None:
        info["reason"] = choice.reason
        return info
    meta, integ = _validate(choice.path, target_preset, variant)
    want = dict(target_preset.target)
    info.update(sha256=db_sha256(choice.path), trials=meta.get("trials", integ.records),
                records=integ.records, mcpu=(meta.get("target") or want).get("mcpu"),
                target=meta.get("target", want), pipeline=meta.get("pipeline"),
                tvm_version=meta.get("tvm_version"), est_latency_ms=meta.get("est_total_ms"))
    if meta.get("dry_run"):
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


def adapt_source(target_preset, variant: str, source: str | bool = True,
                 root: Path | None = None) -> tuple[Path, str, dict[str, Any]]:
    """The set ``tvmflow tune --adapt`` re-measures: ``(log dir, its cpu, its meta)``.

    ``source``: True for the nearest set of another CPU (as compile would choose it), or a
    CPU name.  Refuses a corrupt set, one of another variant / target kind / triple, the
    target's own set (there is nothing to adapt), and CUDA targets (sets are per arch).
    """
    here = target_preset.cpu_key
    if target_preset.is_cuda:
        raise TvmflowError(f"--adapt is for CPU targets; {target_preset.name} is CUDA ({here}), "
                           "whose schedules are per arch (thread and shared-memory sizes)",
                           hint=f"tune {target_preset.name} without --adapt")
    sets = dict(cpu_sets(target_preset.name, variant, root))
    others = sorted(c for c in sets if c != here)
    listed = f"sets of {variant} for {target_preset.name}: {', '.join(sorted(sets)) or 'none'}"
    if isinstance(source, str) and source not in ("", "nearest"):
        if source == here:
            raise TvmflowError(f"--adapt {source}: that is this CPU's own set; nothing to adapt",
                               hint=f"name another CPU ({listed})")
        if source not in sets:
            raise TvmflowError(f"--adapt {source}: no set of {variant} tuned on {source} under "
                               f"{cpu_dir(target_preset, source, root).parent}", hint=listed)
        cpu = source
    else:
        ranked, _paths, skipped = _candidates(target_preset, variant, root, exclude=here)
        if not ranked:
            why = f" (not usable: {'; '.join(skipped)})" if skipped else ""
            raise TvmflowError(f"--adapt: no set of {variant} tuned on another CPU for "
                               f"{target_preset.name}{why}", hint=listed if others else None)
        cpu = ranked[0].cpu
    path = sets[cpu]
    meta, _ = _validate(path, target_preset, variant)
    return path, cpu, meta


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())


def list_schedules_report(repair: bool = False, as_json: bool = False,
                          root: Path | None = None) -> list[dict[str, Any]]:
    """``tvmflow schedules``: optionally repair every log, then list (table unless as_json).

    The rows say which CPU each set was tuned on and which set compile uses here.
    """
    if repair:
        for row in list_schedules(root):
            if row.get("source") == "shipped":
                continue                      # shipped logs are read-only (and checked in CI)
            before = repair_fn(Path(row["path"]))
            if not before.ok and not as_json:
                from tvmflow.ui import console
                console.print(f"repaired {row['path']}: dropped {before.describe()}")
    rows = list_schedules(root, here=True)
    if not as_json:
        from tvmflow.ui import print_table

        def used(r):
            if r.get("used_here") == "exact":
                return "yes"
            if r.get("used_here") == "nearest":
                return f"nearest for {r.get('running_on')}"
            return "-"
        where = ", ".join(str(r) for r in schedule_roots(root))
        print_table(f"tuning logs in {where}",
                    ["source", "target", "cpu", "variant", "trials", "records", "tasks tuned", "est. ms",
                     "used here", "updated", "integrity"],
                    [[r.get("source", "-"), r["target"], r["cpu"] or "-", r["variant"], r["trials"], r["records"],
                      f"{r['tuned_tasks'] or 0}/{r['tasks'] or '?'}",
                      "-" if r["est_latency_ms"] is None else f"{r['est_latency_ms']:.3f}",
                      used(r), r["updated"] or "-", r["integrity"]] for r in rows])
    return rows


repair_fn = repair
