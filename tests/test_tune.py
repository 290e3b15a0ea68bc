"""`tvmflow tune` end to end on the smallest variant (pruned-a8), with tiny budgets.

A module fixture tunes 16 trials into a temporary schedules root; the tests then interrupt
a real tune with SIGINT and resume it, run two tunes of one log at once, measure through a
real RPC tracker + server on 127.0.0.1, and compile with the database (shared pipeline).

The variant is pruned-a8 under another name (``a8tune``, a variant file of the tests): tvmflow
ships sets of pruned-a8, which a tune in an empty workspace resumes from (tested here too).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tvmflow.tuning import schedules as S

VARIANT = "a8tune"
_MODELS: dict[str, Path] = {}


@pytest.fixture(scope="module", autouse=True)
def _variant_file(tmp_path_factory):
    """pruned-a8 as ``a8tune``: no set of it is shipped."""
    d = tmp_path_factory.mktemp("models")
    (d / f"{VARIANT}.toml").write_text(f'name = "{VARIANT}"\nbase = "pruned-a8"\n')
    _MODELS["dir"] = d


@pytest.fixture(autouse=True)
def _model_path(_only_repo_models, monkeypatch):
    monkeypatch.setenv("TVMFLOW_MODEL_PATH", str(_MODELS["dir"]))


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TVM_TRACKER")}
    env.update(TVMFLOW_SCHEDULES=str(root), COLUMNS="200",
               TVMFLOW_MODEL_PATH=str(_MODELS["dir"]))
    return env


def _snapshot(d: Path) -> dict[str, tuple[bytes, int]]:
    """Every file below ``d``: its bytes and mtime."""
    return {str(p.relative_to(d)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(d.rglob("*")) if p.is_file()}


def _tune(root: Path, *args, timeout=900):
    return subprocess.run([sys.executable, "-m", "tvmflow", "tune", "-v", VARIANT, *map(str, args)],
                          env=_env(root), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("sched")
    # NCHW: 13 tasks with room to search each (NCHWc, the default for pruned-a8, leaves 6
    # small ones, some of which have only a candidate or two); later tunes resume this log
    out = _tune(root, "--trials", 16, "--per-round", 8, "--layout", "NCHW", "--json",
                "--population", 16)
    assert out.returncode == 0, out.stderr[-3000:]
    return root, json.loads(out.stdout)[0]


def test_tune_writes_log_and_meta(tuned):
    root, res = tuned
    d = S.schedule_dir("host", VARIANT, root)
    assert res["trials_run"] == 16 and res["trials_total"] == 16 and res["valid"] > 0
    assert S.check(d).ok and S.record_count(d) == 16
    meta = S.read_meta(d)
    assert meta["trials"] == 16 and meta["variant"] == VARIANT and meta["population"] == 16
    assert meta["mcpu"] == meta["target"]["mcpu"] and meta["tvm_version"]
    assert meta["est_total_ms"] > 0 and meta["n_tuned_tasks"] >= 1
    assert (d / "logs").is_dir() and any((d / "logs").iterdir())  # MetaSchedule's own logs
    # TVM's thread count in the runner's worker process, asked there
    from tvmflow.target.presets import get_target
    cores = int(os.environ.get("TVM_NUM_THREADS") or get_target("host").target["num-cores"])
    assert meta["threads"] == {"requested": cores, "tvm": cores} == res["threads"]


def test_rerun_within_budget_does_nothing(tuned):
    """Nothing left to do: the log, meta.json included, is not touched (bytes and mtimes)."""
    root, _ = tuned
    before = _snapshot(root)
    out = _tune(root, "--trials", 16, "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout)[0]
    assert res["skipped"] and res["trials_run"] == 0 and res["trials_before"] == 16
    assert len(res["tasks"]) == S.read_meta(S.schedule_dir("host", VARIANT, root))["n_tasks"]
    out = _tune(root, "--trials", 8, "--layout", "NCHW")       # the log's own pipeline
    assert out.returncode == 0, out.stderr[-2000:]
    assert "16 trials already done (budget 8)" in out.stdout
    assert _snapshot(root) == before


def test_pipeline_build_applies_database(tuned):
    from tvmflow.adapter import pipeline
    from tvmflow.adapter.runtime import local_session
    from tvmflow.ir.frontend import import_model
    from tvmflow.target.presets import get_target
    root, _ = tuned
    preset = get_target("host")
    db, info = S.load_for_compile(preset, VARIANT, root=root)
    assert db is not None and len(info["sha256"]) == 64 and info["trials"] == 16
    model = import_model(VARIANT)
    ex, cov = pipeline.build(model.mod, preset, db,
                             options=pipeline.PipelineOptions.from_json(info["pipeline"]))
    meta = S.read_meta(S.schedule_dir("host", VARIANT, root))
    assert cov["tasks"] == meta["n_tasks"] and cov["tuned"] == meta["n_tuned_tasks"] >= 1
    assert cov["tuned"] + cov["default"] == cov["tasks"]
    x = model.example_input()
    np.testing.assert_allclose(local_session().load(ex).infer(x), model.reference(x), atol=1e-4)


def test_sigint_keeps_records_and_resume_continues(tuned, tmp_path):
    root, _ = tuned
    # a copy of the tuned log, so other tests keep theirs
    src = S.schedule_dir("host", VARIANT, root)
    dst = S.schedule_dir("host", VARIANT, tmp_path)
    dst.mkdir(parents=True)
    for name in (S.DB_WORKLOAD, S.DB_RECORDS, S.META):
        (dst / name).write_bytes((src / name).read_bytes())
    proc = subprocess.Popen([sys.executable, "-m", "tvmflow", "tune", "-v", VARIANT, "--trials",
                             "400", "--per-round", "8"],
                            env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    counts = [16]
    deadline = time.time() + 600
    try:
        while time.time() < deadline and proc.poll() is None:
            n = S.record_count(dst)
            assert n >= counts[-1], f"record count dropped from {counts[-1]} to {n}"
            counts.append(n)
            if n >= 16 + 16:  # two more batches measured
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    kept = S.record_count(dst)
    assert kept >= counts[-1] >= 32
    S.repair(dst)
    assert S.record_count(dst) >= counts[-1]
    meta = S.read_meta(dst)
    assert meta["interrupted"] is True and meta["trials"] >= counts[-1]
    # resume: continues from the records that were kept, never below them
    out = _tune(tmp_path, "--trials", meta["trials"] + 8, "--per-round", "8", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout)[0]
    assert res["trials_before"] == meta["trials"] and res["trials_run"] == 8
    assert S.record_count(dst) == kept + 8
    after = S.read_meta(dst)
    assert after["trials"] == meta["trials"] + 8
    # the resumed run does not start the round-robin pass over: its batch goes to a task
    # the log had no trials for yet (pruned-a8 has 13 tasks, the log covers about 5)
    before_t, after_t = meta["task_trials"], after["task_trials"]
    grown = [n for n in after["tasks"] if after_t.get(n, 0) > before_t.get(n, 0)]
    assert len(grown) == 1 and before_t.get(grown[0], 0) == 0, (before_t, after_t)


def test_second_tune_of_same_log_is_refused(tuned):
    root, _ = tuned
    d = S.schedule_dir("host", VARIANT, root)
    before = (d / S.DB_RECORDS).read_bytes()
    held = S.lock(d)  # as a running tune holds it
    try:
        out = _tune(root, "--trials", 64)
    finally:
        held.release()
    assert out.returncode == 2
    assert "Error: another tune is writing" in out.stderr and "Traceback" not in out.stderr
    assert (d / S.DB_RECORDS).read_bytes() == before


def test_two_real_tunes_at_once(tmp_path):
    """Start two real tunes of one log; exactly one tunes, the other is refused."""
    cmd = [sys.executable, "-m", "tvmflow", "tune", "-v", VARIANT, "--trials", "8",
           "--per-round", "8", "--layout", "NCHW"]
    a = subprocess.Popen(cmd, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    d = S.schedule_dir("host", VARIANT, tmp_path)
    deadline = time.time() + 120
    while not (d / S.LOCK).exists() and time.time() < deadline:
        time.sleep(0.2)
    b = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    _, err_a = a.communicate(timeout=900)
    assert a.returncode == 0, err_a[-2000:]
    assert b.returncode == 2 and "another tune is writing" in b.stderr
    assert S.check(d).ok and S.record_count(d) == 8


def test_cuda_without_gpu_or_tracker_fails_fast(tmp_path):
    out = subprocess.run([sys.executable, "-m", "tvmflow", "tune", "--target", "cuda", "-v",
                          VARIANT], env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    # the missing piece is named (no driver library on a CPU machine), and both ways out
    assert "Error: cannot tune for cuda: no CUDA GPU here" in out.stderr
    assert "libcuda.so.1" in out.stderr
    assert "--tracker" in out.stderr and "--dry-run" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "cuda").exists()


def test_tracker_without_key_is_an_error(tmp_path):
    out = _tune(tmp_path, "--tracker", "127.0.0.1:9190", timeout=120)
    assert out.returncode == 2 and "--tracker needs --key" in out.stderr


def test_tune_through_rpc_tracker(tmp_path):
    from tvmflow.adapter.rpc import local_rpc
    with local_rpc(servers=1, key="tvmflow-tune-test", log_dir=tmp_path) as rpc:
        # NCHW: on an AVX2 CPU NCHWc leaves tasks of 1-2 candidates, and MetaSchedule's
        # last round then overshoots the budget (8 -> 13 on znver1)
        out = _tune(tmp_path, "--trials", 8, "--per-round", 8, "--tracker", rpc.tracker_address,
                    "--key", "tvmflow-tune-test", "--json", "--layout", "NCHW")
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout)[0]
    assert res["trials_run"] == 8 and res["valid"] > 0
    d = S.schedule_dir("host", VARIANT, tmp_path)
    meta = S.read_meta(d)
    assert meta["measured_on"].startswith("rpc 127.0.0.1:") and S.record_count(d) == 8
    assert any(0 < S.run_secs(json.loads(line)) < 1
               for line in (d / S.DB_RECORDS).read_text().splitlines())


# ------------------------------------------------------------------ --adapt (another CPU's set)

OTHER_PRESET = """\
name = "host"
description = "this machine, code for the baseline x86-64 level (stands in for another CPU)"
device = "cpu"
rpc_key = "host"
target = { kind = "llvm", mcpu = "x86-64", num-cores = "auto" }
"""


def test_adapt_remeasures_another_cpus_records_and_the_budget_continues(tmp_path):
    """A few trials tuned for another CPU (the baseline x86-64 level, moved to a set named
    "othercpu"), then `tune --adapt` for this CPU: the source's best records are re-measured
    here and committed with this CPU's target, and the trial budget goes on from them."""
    from tvmflow.target.presets import get_target
    here = get_target("host").cpu_key
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "host.toml").write_text(OTHER_PRESET)
    root = tmp_path / "sched"
    env = dict(_env(root), TVMFLOW_TARGET_PATH=str(presets))
    out = subprocess.run([sys.executable, "-m", "tvmflow", "tune", "-v", VARIANT, "--trials", "16",
                          "--per-round", "8", "--layout", "NCHW", "--json"], env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    src = S.schedule_dir("host", VARIANT, root, cpu="othercpu")
    src.parent.mkdir(parents=True)
    (root / "host" / "x86-64" / VARIANT).rename(src)
    src_recs = [json.loads(line) for line in (src / S.DB_RECORDS).read_text().splitlines()]
    src_tasks = {n for n, k in S.read_meta(src)["task_trials"].items() if k}
    assert {r[1][2]["mcpu"] for r in src_recs} == {"x86-64"} and len(src_tasks) == 2

    out = _tune(root, "--adapt", "--trials", 8, "--per-round", 8)       # the nearest: othercpu
    assert out.returncode == 0, out.stderr[-3000:]
    dst = S.schedule_dir("host", VARIANT, root)
    assert dst == root / "host" / here / VARIANT
    meta = S.read_meta(dst)
    (adapted,) = meta["adapted_from"]
    n = adapted["records"]
    assert adapted["cpu"] == "othercpu" and adapted["tasks"] == 2 and 2 <= n <= 6
    assert set(adapted["task_records"]) == src_tasks
    assert f"adapted {n} records of othercpu" in out.stdout and f"on {here}" in out.stdout
    assert "est. total of those tasks:" in out.stdout and "est. total of this log:" in out.stdout
    # the adapted records: the source's traces, timed here, for this CPU's target
    recs = [json.loads(line) for line in (dst / S.DB_RECORDS).read_text().splitlines()]
    by_trace = {json.dumps(r[1][0]): r for r in src_recs}
    first = recs[:n]
    for r in first:
        s = by_trace[json.dumps(r[1][0])]
        assert r[1][2]["mcpu"] == here and s[1][2]["mcpu"] == "x86-64"
        assert r[1][1] != s[1][1] and 0 < S.run_secs(r) < 1
    # re-measurements are not trials; the 8 trials of the budget went on past the adapted
    # tasks (the scheduler counts them as tuned once), to a task no record covered
    assert meta["trials"] == 8 and meta["cpu"] == here and len(recs) == n + 8
    grown = [t for t, k in meta["task_trials"].items() if k]
    assert len(grown) == 1 and grown[0] not in src_tasks, meta["task_trials"]
    assert set(meta["best_ms"]) >= src_tasks | set(grown)

    # the same source again: nothing re-measured; a CPU without a set: a clear error
    out = _tune(root, "--adapt", "othercpu", "--trials", 8, "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout)[0]
    assert res["adapted"]["skipped"].startswith("already adapted") and res["skipped"]
    assert S.record_count(dst) == n + 8
    out = _tune(root, "--adapt", "nosuch", "--trials", 8, timeout=120)
    assert out.returncode == 2 and f"no set of {VARIANT} tuned on nosuch" in out.stderr


# ------------------------------------------------------------------ nothing lost


def test_fresh_moves_the_old_log_aside_and_says_where(tuned, tmp_path):
    root, _ = tuned
    src = S.schedule_dir("host", VARIANT, root)
    dst = S.schedule_dir("host", VARIANT, tmp_path)
    dst.mkdir(parents=True)
    old = {n: (src / n).read_bytes() for n in (S.DB_WORKLOAD, S.DB_RECORDS, S.META)}
    for name, data in old.items():
        (dst / name).write_bytes(data)
    out = _tune(tmp_path, "--fresh", "--trials", 8, "--per-round", 8, "--layout", "NCHW")
    assert out.returncode == 0, out.stderr[-3000:]
    (aside,) = [p for p in dst.parent.iterdir() if p.name.startswith(f"{VARIANT}.old-")]
    assert f"the old log was moved to {aside}" in " ".join(out.stdout.split())
    assert {n: (aside / n).read_bytes() for n in old} == old       # nothing lost
    assert S.record_count(dst) == 8 and S.read_meta(dst)["trials"] == 8
    # the moved log is no set of its own
    assert [r["variant"] for r in S.list_schedules(tmp_path)] == [VARIANT]


def test_a_set_shipped_for_this_cpu_is_copied_and_never_written(tuned, tmp_path, monkeypatch):
    """An empty workspace, a set of the variant shipped for this CPU: a tune with nothing to
    do copies nothing; one with trials to run resumes from a copy in the workspace, and the
    shipped files stay as they were."""
    import tvmflow.workspace as ws
    from tvmflow.target.presets import get_target
    from tvmflow.tuning.tune import tune
    root, _ = tuned
    real = ws.shipped_dir
    fake = tmp_path / "shipped"
    monkeypatch.setattr(ws, "shipped_dir",
                        lambda kind: fake / kind if kind == "schedules" else real(kind))
    here = get_target("host").cpu_key
    shipped = fake / "schedules" / "host" / here / VARIANT
    shipped.mkdir(parents=True)
    for name in (S.DB_WORKLOAD, S.DB_RECORDS, S.META):
        (shipped / name).write_bytes((S.schedule_dir("host", VARIANT, root) / name).read_bytes())
    before = _snapshot(fake)
    workspace = tmp_path / "ws"
    monkeypatch.setenv("TVMFLOW_SCHEDULES", str(workspace))
    res = tune(VARIANT, trials=16)
    assert res.skipped and res.log_dir == shipped and not workspace.exists()
    # a host program's handler without a name on MetaSchedule's logger (seen in CI) must
    # not break its logging setup
    import logging
    logging.getLogger("tvm.s_tir.meta_schedule").addHandler(logging.NullHandler())
    import tvmflow.adapter.tune as ad
    real_strategy, populations = ad.search_strategy, []
    monkeypatch.setattr(ad, "search_strategy",
                        lambda population, **kw: populations.append(population)
                        or real_strategy(population, **kw))
    monkeypatch.setenv("TVMFLOW_TUNE_POPULATION", "24")
    res = tune(VARIANT, trials=24, per_round=8)
    assert populations == [24] and S.read_meta(res.log_dir)["population"] == 24
    log = S.schedule_dir("host", VARIANT, workspace)
    assert res.log_dir == log and res.trials_before == 16 and res.trials_run == 8
    assert S.record_count(log) == 16 + 8 and S.read_meta(log)["trials"] == 24
    assert _snapshot(fake) == before


def test_nothing_to_do_touches_nothing_and_imports_no_model(tmp_path, monkeypatch):
    """A log that holds the budget already: the result comes from its meta.json, and no file
    is written (bytes and mtimes), no model imported."""
    import tvmflow.ir.frontend as frontend
    from tvmflow.target.presets import get_target
    from tvmflow.tuning.tune import tune

    def no_import(*args, **kwargs):
        raise AssertionError("the model was imported")
    monkeypatch.setattr(frontend, "import_model", no_import)
    preset = get_target("host")
    log = S.schedule_dir(preset, VARIANT, tmp_path)
    log.mkdir(parents=True)
    (log / S.DB_WORKLOAD).write_text('["1","wl"]\n')
    (log / S.DB_RECORDS).write_text("".join(
        json.dumps([0, [[["trace", i]], [1e-3 * (i + 1)], dict(preset.target), []]]) + "\n"
        for i in range(10)))
    S.write_meta(log, {"variant": VARIANT, "target": dict(preset.target), "trials": 10,
                       "tasks": ["t0"], "weights": {"t0": 2}, "best_ms": {"t0": 0.5},
                       "task_trials": {"t0": 10}, "n_tasks": 1})
    before = _snapshot(tmp_path)
    res = tune(VARIANT, trials=10, root=tmp_path)
    assert res.skipped and (res.trials_before, res.trials_run, res.trials_total) == (10, 0, 10)
    assert [(t.name, t.trials, t.weighted_ms) for t in res.tasks] == [("t0", 10, 1.0)]
    assert _snapshot(tmp_path) == before


def test_population_default_environment_and_bad_values(monkeypatch):
    from tvmflow.errors import TvmflowError
    from tvmflow.tuning.tune import DEFAULT_POPULATION, resolve_population
    monkeypatch.delenv("TVMFLOW_TUNE_POPULATION", raising=False)
    assert resolve_population(None) == DEFAULT_POPULATION == 256
    assert resolve_population(64) == 64
    monkeypatch.setenv("TVMFLOW_TUNE_POPULATION", "48")
    assert resolve_population(None) == 48 and resolve_population(16) == 16
    for bad, message in (("lots", "TVMFLOW_TUNE_POPULATION must be a whole number, got 'lots'"),
                         ("4", "TVMFLOW_TUNE_POPULATION must be a whole number of at least 8")):
        monkeypatch.setenv("TVMFLOW_TUNE_POPULATION", bad)
        with pytest.raises(TvmflowError, match=message):
            resolve_population(None)
    with pytest.raises(TvmflowError, match="--population must be a whole number of at least 8"):
        resolve_population(2)
