"""One tuning log directory, without TVM: its integrity, repair, compaction, meta.json and lock.

A log directory holds MetaSchedule's two JSON database files (one JSON value per line)::

    database_workload.json        [structural_hash, workload]            (one per task)
    database_tuning_record.json   [workload_index, [trace, run_secs, target, args_info]]

plus ``meta.json`` (:class:`~tvmflow.tuning.meta.ScheduleMeta`) and ``logs/`` (MetaSchedule's
own logs, not committed).

* :func:`check` / :func:`repair` -- a line that is not valid JSON (a crash mid-write leaves
  a truncated last line) is found and dropped; every good record is kept.
* :func:`compact` -- keep only the best few records per workload (the shipped logs).
* :func:`lock` -- a filelock per log directory, so two tunes never write the same files.
* :func:`move_aside` -- ``tune --fresh`` keeps the old log beside the new one.
* :func:`db_sha256` -- what a compiled module records, and what its staleness check compares.

Every write is atomic (a temporary file renamed over the old one).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tvmflow.errors import TvmflowError
from tvmflow.tuning.meta import META, ScheduleMeta

DB_WORKLOAD = "database_workload.json"
DB_RECORDS = "database_tuning_record.json"
LOCK = ".tune.lock"
FAILED_SECS = 1e9
LOG_FILES = (DB_WORKLOAD, DB_RECORDS, META)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``path`` whole or not at all (a temporary file, fsync'ed, renamed over it)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_lines(path: Path, values: list[Any]) -> None:
    write_atomic(path, "".join(json.dumps(v, separators=(",", ":")) + "\n" for v in values))


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
    _write_lines(log_dir / DB_WORKLOAD, wls)
    _write_lines(log_dir / DB_RECORDS, recs)
    return before


def compact(log_dir: Path, keep: int = 3) -> tuple[int, int]:
    """Keep the best ``keep`` valid records per workload; returns (before, after).  A log
    already compacted is not rewritten."""
    log_dir = Path(log_dir)
    repair(log_dir)
    recs, _ = _read_lines(log_dir / DB_RECORDS)
    by_wl: dict[int, list] = {}
    for r in recs:
        if run_secs(r) != float("inf"):
            by_wl.setdefault(r[0], []).append(r)
    kept = []
    for idx in sorted(by_wl):
        kept += sorted(by_wl[idx], key=run_secs)[:keep]
    if kept != recs:
        _write_lines(log_dir / DB_RECORDS, kept)
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
    """sha256 over both database files (their names and bytes), read in chunks."""
    h = hashlib.sha256()
    for name in (DB_WORKLOAD, DB_RECORDS):
        p = Path(log_dir) / name
        h.update(name.encode())
        if p.exists():
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- meta.json


def load_meta(log_dir: Path) -> ScheduleMeta:
    """The log's :class:`ScheduleMeta` (an empty one when it has no meta.json)."""
    return ScheduleMeta.read(log_dir) or ScheduleMeta()


def save_meta(log_dir: Path, meta: ScheduleMeta) -> None:
    """Write meta.json atomically; a file that would not change is left alone."""
    path = Path(log_dir) / META
    text = meta.text()
    if path.exists() and path.read_text() == text:
        return
    write_atomic(path, text)


def read_meta(log_dir: Path) -> dict[str, Any]:
    """meta.json as JSON data (``{}`` when absent), for scripts and tests; tvmflow itself
    reads :func:`load_meta`."""
    meta = ScheduleMeta.read(log_dir)
    return {} if meta is None else meta.to_json()


def write_meta(log_dir: Path, meta: dict[str, Any]) -> None:
    """Write JSON data as meta.json, through :class:`ScheduleMeta` (scripts and tests)."""
    save_meta(log_dir, ScheduleMeta.from_json(meta))


# --------------------------------------------------------------------------- lock, fresh


def lock(log_dir: Path, wait: float = 0.0):
    """A filelock for one log directory; raises TvmflowError when another tune holds it."""
    import filelock
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    lk = filelock.FileLock(str(log_dir / LOCK))
    try:
        lk.acquire(timeout=wait)
    except filelock.Timeout:
        raise TvmflowError(f"another tune is writing {log_dir} (lock {log_dir / LOCK} is held)",
                           hint="wait for it to finish, or tune another target/variant") from None
    return lk


def has_log(log_dir: Path) -> bool:
    return any((Path(log_dir) / name).exists() for name in LOG_FILES)


def move_aside(log_dir: Path) -> Path | None:
    """Move the log's files (database, meta.json, logs/) into ``<log>.old-<timestamp>/``
    beside it and return that folder; None when there was no log.  Nothing is deleted."""
    log_dir = Path(log_dir)
    names = [n for n in (*LOG_FILES, "logs") if (log_dir / n).exists()]
    if not any(n in LOG_FILES for n in names):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = log_dir.with_name(f"{log_dir.name}.old-{stamp}")
    n = 1
    while dest.exists():
        n += 1
        dest = log_dir.with_name(f"{log_dir.name}.old-{stamp}-{n}")
    dest.mkdir(parents=True)
    for name in names:
        os.replace(log_dir / name, dest / name)
    return dest


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
