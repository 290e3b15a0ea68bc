"""Tuning-log files: integrity check, repair, compact, listing, load_for_compile refusals.

Logs live in ``<root>/<target>/<cpu>/<variant>/``; ``S.schedule_dir("host", v, root)`` is
the set of the CPU these tests run on (tests/test_cpu_sets.py covers choosing among sets).

These use small synthetic logs in MetaSchedule's JSON-lines format (no tuning), so they run
in seconds; test_tune.py covers logs written by real tunes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tvmflow.tuning import schedules as S
from tvmflow.errors import TvmflowError
from tvmflow.target.presets import get_target

TARGET = {"keys": ["cpu"], "kind": "llvm", "mcpu": "x86-64-v4", "num-cores": 2, "tag": ""}


def _rec(wl: int, secs: float, target=None) -> list:
    return [wl, [[["trace", secs]], [secs], target or TARGET, [["TENSOR", "float32", [1, 8]]]]]


def _write(log_dir: Path, n_wl: int = 2, recs=None, meta=None, tail: str = "") -> Path:
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / S.DB_WORKLOAD).write_text("".join(json.dumps([str(1000 + i), f"wl{i}"]) + "\n"
                                                 for i in range(n_wl)))
    recs = recs if recs is not None else [_rec(i % n_wl, 1e-3 * (i + 1)) for i in range(10)]
    (log_dir / S.DB_RECORDS).write_text("".join(json.dumps(r) + "\n" for r in recs) + tail)
    if meta is not None:
        S.write_meta(log_dir, meta)
    return log_dir


def _preset():
    return get_target("host")


def _meta(preset, variant="pruned-a8", **kw):
    m = {"target": dict(preset.target), "variant": variant, "trials": 10,
         "mcpu": preset.target.get("mcpu"), "est_total_ms": 0.5, "n_tasks": 2, "n_tuned_tasks": 2}
    m.update(kw)
    return m


def test_truncated_last_line_is_detected_and_repaired(tmp_path):
    d = _write(tmp_path / "host" / "v", tail=json.dumps(_rec(0, 5e-4))[:37])  # crash mid-line
    before = S.check(d)
    assert not before.ok and before.records == 10 and before.bad_record_lines == [11]
    S.repair(d)
    after = S.check(d)
    assert after.ok and after.records == 10
    # every good record is still there, byte for byte
    kept = [json.loads(line) for line in (d / S.DB_RECORDS).read_text().splitlines()]
    assert kept == [_rec(i % 2, 1e-3 * (i + 1)) for i in range(10)]


def test_record_pointing_past_workloads_is_dropped(tmp_path):
    d = _write(tmp_path / "x", recs=[_rec(0, 1e-3), _rec(5, 1e-3)])
    assert not S.check(d).ok
    S.repair(d)
    assert S.check(d).ok and S.record_count(d) == 1


def test_compact_keeps_best_per_workload(tmp_path):
    recs = [_rec(i % 2, 1e-3 * (10 - i)) for i in range(10)] + [_rec(0, 1e10)]  # 1e10: failed
    d = _write(tmp_path / "c", recs=recs)
    before, after = S.compact(d, keep=2)
    assert (before, after) == (11, 4)
    kept = [json.loads(line) for line in (d / S.DB_RECORDS).read_text().splitlines()]
    by_wl = {}
    for r in kept:
        by_wl.setdefault(r[0], []).append(r[1][1][0])
    assert by_wl == {0: pytest.approx([2e-3, 4e-3]), 1: pytest.approx([1e-3, 3e-3])}


def test_lock_refuses_a_second_holder(tmp_path):
    first = S.lock(tmp_path / "l")
    try:
        with pytest.raises(TvmflowError, match="another tune is writing"):
            S.lock(tmp_path / "l")
    finally:
        first.release()
    S.lock(tmp_path / "l").release()  # free again


def test_load_for_compile_without_log(tmp_path):
    db, info = S.load_for_compile(_preset(), "pruned-a8", root=tmp_path)
    assert db is None and "no tuning log" in info["reason"]


def test_load_for_compile_refuses_corrupt_log(tmp_path):
    p = _preset()
    _write(S.schedule_dir("host", "pruned-a8", tmp_path), meta=_meta(p), tail='[0, [[["tr')
    with pytest.raises(TvmflowError, match="corrupt"):
        S.load_for_compile(p, "pruned-a8", root=tmp_path)


def test_load_for_compile_uses_another_cpus_set_as_the_nearest(tmp_path):
    """Tuned on this CPU, compiled for another x86 CPU: no longer refused, but named."""
    p = _preset()
    other = replace(p, target={**p.target, "mcpu": "znver5" if p.cpu_key != "znver5" else "znver4"},
                    detected={})
    _write(S.schedule_dir("host", "pruned-a8", tmp_path), meta=_meta(p))
    info = S.database_info(other, "pruned-a8", root=tmp_path)  # what compile applies
    assert info["sha256"] and info["match"] == "nearest" and info["cpu"] == p.cpu_key
    assert info["note"] == f"tuned on {p.cpu_key}, running on {other.cpu_key}"
    assert info["path"] == str(S.schedule_dir("host", "pruned-a8", tmp_path))


def test_load_for_compile_refuses_other_triple(tmp_path):
    p = _preset()
    _write(S.schedule_dir("host", "pruned-a8", tmp_path),
           meta=_meta(p, target={"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": p.cpu_key}))
    with pytest.raises(TvmflowError, match=r"tuned for another target: mtriple 'aarch64-linux-gnu'"
                                           r".*illegal instruction"):
        S.load_for_compile(p, "pruned-a8", root=tmp_path)


def test_load_for_compile_refuses_records_of_other_architecture(tmp_path):
    """meta.json may agree while the records themselves were tuned for an aarch64 CPU."""
    p = _preset()
    recs = [_rec(0, 1e-3), _rec(1, 1e-3, {**TARGET, "mcpu": "cortex-a72"})]
    _write(S.schedule_dir("host", "pruned-a8", tmp_path), recs=recs, meta=_meta(p))
    with pytest.raises(TvmflowError, match="records tuned for another target.*'cortex-a72' is an "
                                           "aarch64 CPU"):
        S.load_for_compile(p, "pruned-a8", root=tmp_path)


def test_load_for_compile_refuses_other_variant(tmp_path):
    p = _preset()
    _write(S.schedule_dir("host", "pruned-a8", tmp_path), meta=_meta(p, variant="original"))
    with pytest.raises(TvmflowError, match="variant 'original'"):
        S.load_for_compile(p, "pruned-a8", root=tmp_path)


def test_schedules_cli_lists_and_repairs(tmp_path):
    p = _preset()
    _write(S.schedule_dir("host", "pruned-a8", tmp_path), meta=_meta(p), tail='[1, [')
    env = {**os.environ, "TVMFLOW_SCHEDULES": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "tvmflow", "schedules", "--json"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [r for r in json.loads(out.stdout) if r["source"] == "workspace"]
    cpu = p.cpu_key
    assert [(r["target"], r["cpu"], r["variant"], r["trials"]) for r in rows] == \
        [("host", cpu, "pruned-a8", 10)]
    assert rows[0]["integrity"].startswith("corrupt")
    assert rows[0]["used_here"] == "exact" and rows[0]["running_on"] == cpu
    out = subprocess.run([sys.executable, "-m", "tvmflow", "schedules", "--repair", "--json"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [r for r in json.loads(out.stdout) if r["source"] == "workspace"]
    assert rows[0]["integrity"] == "ok" and rows[0]["records"] == 10


# ------------------------------------------------------------------ meta.json (ScheduleMeta)

DATA = Path(__file__).parent / "data" / "schedule_meta"


def test_every_shipped_meta_reads_and_writes_back_byte_for_byte():
    from tvmflow.workspace import shipped_dir
    metas = sorted(shipped_dir("schedules").glob("*/*/*/meta.json"))
    assert len(metas) >= 10
    for path in metas:
        meta = S.ScheduleMeta.read(path.parent)
        assert meta.text() == path.read_text(), path
        assert (meta.cpu, meta.variant) == (path.parent.parent.name, path.parent.name)
        assert meta.trials > 0 and meta.tasks and meta.isa


def test_older_meta_formats_read():
    """meta.json as the first shipped logs wrote it (no cpu, no threads, the pipeline of
    three options; tests/data/schedule_meta holds copies from the git history)."""
    files = sorted(DATA.glob("*.json"))
    assert len(files) >= 2
    for path in files:
        data = json.loads(path.read_text())
        meta = S.ScheduleMeta.from_json(data)
        assert "cpu" not in data and meta.cpu == data["detected"]["llvm_cpu"] == "emeraldrapids"
        assert meta.isa == "avx512" and meta.threads is None and meta.adapted_from == []
        assert (meta.trials, meta.pipeline, meta.best_ms) == (data["trials"], data["pipeline"],
                                                              data["best_ms"])
        assert meta.to_json() == {**data, "cpu": "emeraldrapids"}


def test_meta_keeps_unknown_keys_and_an_unchanged_file_is_not_rewritten(tmp_path):
    S.write_meta(tmp_path, {"variant": "x", "trials": 3, "from_a_newer_tvmflow": {"a": 1}})
    meta = S.load_meta(tmp_path)
    assert meta.extra == {"from_a_newer_tvmflow": {"a": 1}} and meta.trials == 3
    assert S.read_meta(tmp_path)["from_a_newer_tvmflow"] == {"a": 1}
    before = (tmp_path / S.META).stat().st_mtime_ns
    os.utime(tmp_path / S.META, ns=(before - 10**9, before - 10**9))
    S.save_meta(tmp_path, meta)
    assert (tmp_path / S.META).stat().st_mtime_ns == before - 10**9
    meta.trials = 4
    S.save_meta(tmp_path, meta)
    assert S.read_meta(tmp_path)["trials"] == 4
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize("text", ["{", "[1, 2]", '{"trials": 3, "adapted_from": [{"x": 1}]}'])
def test_a_corrupt_meta_is_one_clear_error(tmp_path, text):
    (tmp_path / S.META).write_text(text)
    with pytest.raises(TvmflowError, match=f"{tmp_path / S.META}"):
        S.load_meta(tmp_path)


def test_move_aside_keeps_everything(tmp_path):
    log = _write(tmp_path / "host" / "cpu" / "pruned", meta={"variant": "pruned", "trials": 10})
    (log / "logs").mkdir()
    (log / "logs" / "x.log").write_text("tvm says")
    files = {n: (log / n).read_bytes() for n in (S.DB_WORKLOAD, S.DB_RECORDS, S.META)}
    first = S.move_aside(log)
    assert first.parent == log.parent and first.name.startswith("pruned.old-")
    assert {n: (first / n).read_bytes() for n in files} == files
    assert (first / "logs" / "x.log").read_text() == "tvm says" and not S.has_log(log)
    assert S.move_aside(log) is None                    # nothing there: nothing moved
    _write(log)
    second = S.move_aside(log)
    assert second != first and S.record_count(second) == 10


def test_the_staleness_check_reads_meta_and_hashes_without_opening_the_database(
        tmp_path, monkeypatch):
    """compile's staleness check (schedule_database(load=False)) finds the set in
    tvmflow.tuning.schedules (an importlib fallback once looked elsewhere and found none),
    and never opens the database through TVM; compiling does."""
    import tvmflow.adapter.tune as ad
    from tvmflow.artifact.compile import schedule_database

    def no_open(*args, **kwargs):
        raise AssertionError("the database was opened")
    monkeypatch.setattr(ad, "open_database", no_open)
    monkeypatch.setenv("TVMFLOW_SCHEDULES", str(tmp_path))
    p = _preset()
    d = _write(S.schedule_dir(p, "pruned-a8"), meta=_meta(p))
    db, info = schedule_database(p, "pruned-a8", load=False)
    assert db is None and info["sha256"] == S.db_sha256(d) and info["path"] == str(d)
    assert info["trials"] == 10 and info["match"] == "exact"
    with pytest.raises(AssertionError, match="the database was opened"):
        schedule_database(p, "pruned-a8")


@pytest.mark.parametrize("data", [{"trials": "many"}, {"best_ms": [1]}, {"interrupted": "no"},
                                  {"trials": True}, {"adapted_from": [3]}])
def test_a_meta_of_the_wrong_types_is_one_clear_error(tmp_path, data):
    (tmp_path / S.META).write_text(json.dumps(data))
    with pytest.raises(TvmflowError, match="is not a tuning log's meta.json"):
        S.load_meta(tmp_path)
