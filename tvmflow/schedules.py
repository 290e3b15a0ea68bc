"""Tuning logs: ``schedules/<target>/<variant>/``.

Each log directory holds MetaSchedule's two JSON database files (one JSON value per line)::

    database_workload.json        [structural_hash, workload]            (one per task)
    database_tuning_record.json   [workload_index, [trace, run_secs, target, args_info]]

plus ``meta.json`` (target dict, TVM version, mcpu, pipeline options, trials done, wall time,
best estimated latency per task and in total) and ``logs/`` (MetaSchedule's own logs, not
committed).  This module reads and writes them without TVM:

* :func:`check` / :func:`repair` -- a line that is not valid JSON (a crash mid-write leaves
  a truncated last line) is found and dropped; every good record is kept.
* :func:`compact` -- keep only the best few records per workload (the shipped logs).
* :func:`lock` -- a filelock per log directory, so two tunes never write the same files.
* :func:`load_for_compile` -- the database compile applies, after refusing a corrupt one or
  one tuned for another target / variant / mcpu.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import TvmflowError

SCHEDULES_DIR = Path(__file__).resolve().parent.parent / "schedules"
DB_WORKLOAD = "database_workload.json"
DB_RECORDS = "database_tuning_record.json"
META = "meta.json"
LOCK = ".tune.lock"
FAILED_SECS = 1e9
TARGET_KEYS = ("kind", "mtriple", "mcpu", "arch")


def schedules_root() -> Path:
    env = os.environ.get("TVMFLOW_SCHEDULES")
    return Path(env) if env else SCHEDULES_DIR


def schedule_dir(target_name: str, variant: str, root: Path | None = None) -> Path:
    return Path(root or schedules_root()) / target_name / variant


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


def list_schedules(root: Path | None = None) -> list[dict[str, Any]]:
    """Every ``<target>/<variant>`` log under the schedules root."""
    root = Path(root or schedules_root())
    out = []
    if not root.is_dir():
        return out
    for tdir in sorted(p for p in root.iterdir() if p.is_dir()):
        for vdir in sorted(p for p in tdir.iterdir() if p.is_dir()):
            if not (vdir / DB_RECORDS).exists() and not (vdir / META).exists():
                continue
            try:
                meta = read_meta(vdir)
            except TvmflowError:
                meta = {}
            integ = check(vdir)
            out.append({"target": tdir.name, "variant": vdir.name, "path": str(vdir),
                        "trials": meta.get("trials", 0), "records": integ.records,
                        "workloads": integ.workloads, "mcpu": meta.get("mcpu"),
                        "updated": meta.get("updated"),
                        "est_latency_ms": meta.get("est_total_ms"),
                        "tasks": meta.get("n_tasks"), "tuned_tasks": meta.get("n_tuned_tasks"),
                        "integrity": integ.describe()})
    return out


# --------------------------------------------------------------------------- compile


def _target_mismatch(want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    diffs = []
    for k in TARGET_KEYS:
        a, b = want.get(k), got.get(k)
        if k == "mtriple" and not a and not b:
            continue
        if (a or None) != (b or None):
            diffs.append(f"{k} {b!r} (this target: {a!r})")
    return diffs


def load_for_compile(target_preset, variant: str, root: Path | None = None):
    """The database to apply when compiling ``variant`` for ``target_preset``.

    Returns ``(database | None, info)``: None (and ``info["reason"]``) when no log exists.
    Raises TvmflowError for a corrupt log, or one tuned for another target, variant or mcpu
    (records for another mcpu may use instructions this CPU lacks).
    ``info`` = ``{"path", "sha256", "trials", "records", "mcpu", "target", "pipeline",
    "tvm_version", "est_latency_ms"}``.
    """
    log_dir = schedule_dir(target_preset.name, variant, root)
    info: dict[str, Any] = {"path": str(log_dir)}
    if not (log_dir / DB_RECORDS).exists():
        info["reason"] = f"no tuning log at {log_dir}"
        return None, info
    where = f"tuning log {log_dir}"
    integ = check(log_dir)
    if not integ.ok:
        raise TvmflowError(f"{where} is corrupt ({integ.describe()})",
                           hint=f"run `tvmflow schedules --repair` or `tvmflow tune --target "
                                f"{target_preset.name} --variant {variant}` (repairs it first)")
    meta = read_meta(log_dir)
    if meta.get("variant") not in (None, variant):
        raise TvmflowError(f"{where} was tuned for variant {meta['variant']!r}, not {variant!r}")
    want = dict(target_preset.target)
    if meta.get("target"):
        diffs = _target_mismatch(want, meta["target"])
        if diffs:
            raise TvmflowError(f"{where} was tuned for another target: {'; '.join(diffs)}",
                               hint="compile refuses records tuned for another CPU/GPU (they may "
                                    "crash with an illegal instruction); retune with tvmflow tune")
    for rec_target in record_targets(log_dir):
        diffs = _target_mismatch(want, rec_target)
        if diffs:
            raise TvmflowError(f"{where} holds records tuned for another target: {'; '.join(diffs)}",
                               hint="compile refuses records tuned for another CPU/GPU (they may "
                                    "crash with an illegal instruction); retune with tvmflow tune")
    from .adapter.tune import open_database
    db = open_database(str(log_dir), allow_missing=False)
    info.update(sha256=db_sha256(log_dir), trials=meta.get("trials", integ.records),
                records=integ.records, mcpu=(meta.get("target") or want).get("mcpu"),
                target=meta.get("target", want), pipeline=meta.get("pipeline"),
                tvm_version=meta.get("tvm_version"), est_latency_ms=meta.get("est_total_ms"))
    return db, info


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())


def list_schedules_report(repair: bool = False, as_json: bool = False,
                          root: Path | None = None) -> list[dict[str, Any]]:
    """``tvmflow schedules``: optionally repair every log, then list (table unless as_json)."""
    if repair:
        for row in list_schedules(root):
            before = repair_fn(Path(row["path"]))
            if not before.ok and not as_json:
                from .ui import console
                console.print(f"repaired {row['path']}: dropped {before.describe()}")
    rows = list_schedules(root)
    if not as_json:
        from .ui import print_table
        print_table(f"tuning logs in {root or schedules_root()}",
                    ["target", "variant", "trials", "records", "tasks tuned", "est. ms", "mcpu",
                     "updated", "integrity"],
                    [[r["target"], r["variant"], r["trials"], r["records"],
                      f"{r['tuned_tasks'] or 0}/{r['tasks'] or '?'}",
                      "-" if r["est_latency_ms"] is None else f"{r['est_latency_ms']:.3f}",
                      r["mcpu"] or "-", r["updated"] or "-", r["integrity"]] for r in rows])
    return rows


repair_fn = repair
