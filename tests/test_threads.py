"""Thread counts: every runner gets the target's num-cores (or --threads), measured where it ran.

TVM's pool takes its size from TVM_NUM_THREADS when it starts (else half the logical cores on
x86: 1 on a 2-vCPU VM), so these tests ask TVM itself -- ``runtime.NumThreads`` over RPC, in
the tuning runner's worker process -- and compare with the host preset's ``num-cores``.
"""

from __future__ import annotations

import json

import pytest

from tvmflow import threads as T
from tvmflow.errors import TvmflowError
from tvmflow.measure.report import BenchReport, VariantResult
from tvmflow.measure.stats import Latency
from tvmflow.target.presets import get_target


@pytest.fixture
def no_env_threads(monkeypatch):
    """The default count comes from the preset, not from the caller's TVM_NUM_THREADS."""
    monkeypatch.delenv(T.ENV, raising=False)


@pytest.fixture(scope="module")
def host_cores() -> int:
    n = get_target("host").target["num-cores"]
    assert isinstance(n, int) and n >= 1
    return n


# ----------------------------------------------------------------------------- resolving


def test_resolve_threads_then_environment_then_preset(no_env_threads, host_cores):
    rpi4 = get_target("rpi4")
    assert T.resolve(rpi4) == rpi4.target["num-cores"] == 4
    assert T.resolve(get_target("host")) == host_cores
    assert T.resolve(rpi4, environ={T.ENV: "3"}) == 3
    assert T.resolve(rpi4, 1, environ={T.ENV: "3"}) == 1
    for bad in (0, -2, "x", 1.5):
        with pytest.raises(TvmflowError, match="--threads must be"):
            T.resolve(rpi4, bad)
    with pytest.raises(TvmflowError, match="TVM_NUM_THREADS='0' in the environment"):
        T.resolve(rpi4, environ={T.ENV: "0"})


def test_child_env_and_scoped(monkeypatch):
    monkeypatch.setenv(T.ENV, "7")
    env = T.child_env(3, base={"PATH": "/bin"}, extra={"TVM_BIND_THREADS": 0})
    assert env == {"PATH": "/bin", T.ENV: "3", "TVM_BIND_THREADS": "0"}
    with pytest.raises(TvmflowError, match="not a TVM thread-pool setting"):
        T.settings(2, {"OMP_NUM_THREADS": 2})
    import os
    with T.scoped(2, {"TVM_THREAD_POOL_SPIN_COUNT": 0}):
        assert os.environ[T.ENV] == "2" and os.environ["TVM_THREAD_POOL_SPIN_COUNT"] == "0"
    assert os.environ[T.ENV] == "7" and "TVM_THREAD_POOL_SPIN_COUNT" not in os.environ


# ----------------------------------------------------------------------------- measured


def test_compare_host_rpc_server_runs_num_cores_threads(no_env_threads, host_cores):
    """The server `compare --target host` starts (route local-rpc) runs num-cores threads."""
    from tvmflow.runtime.session import open_session, resolve_route
    preset = get_target("host")
    route = resolve_route(default_key=preset.rpc_key, default_via="rpc", environ={})
    assert route.mode == "local-rpc"
    threads = T.resolve(preset)          # what bench.run resolves without --threads
    with open_session(route, device_kind=preset.device, timeout=30, threads=threads) as sess:
        asked_there = int(sess.remote.get_function("runtime.NumThreads")())
        assert sess.use_threads(threads) == asked_there
    assert asked_there == host_cores


def test_tuning_runner_worker_runs_the_count(no_env_threads, host_cores):
    """MetaSchedule's LocalRunner worker (a separate process) reports the count -- also after
    the worker is restarted (the initializer runs in every new worker)."""
    from tvmflow.adapter import tune as ad
    runner = ad.make_local_runner(threads=host_cores)
    try:
        assert ad.runner_threads(runner) == host_cores
        workers = list(runner.pool._worker_map.values())
        pids = {w._proc.pid for w in workers}
        for worker in workers:                  # as after a timeout: the next call restarts it
            worker.kill()
        assert ad.runner_threads(runner) == host_cores
        assert {w._proc.pid for w in runner.pool._worker_map.values()}.isdisjoint(pids)
    finally:
        runner.pool.shutdown()


def test_threads_1_for_every_runner_in_the_report(artifacts, no_env_threads, tmp_path):
    import torch
    from tvmflow.measure.bench import BenchOptions, bench
    before = torch.get_num_threads()
    opts = BenchOptions(warmup=1, min_repeats=4, min_time=0, rounds=2, settle=0)
    report = bench("host", "pruned-a8", threads=1, options=opts, out_dir=tmp_path / "out")
    assert report.environment["route_mode"] == "local-rpc"
    assert report.threads == {"tvm": 1, "pytorch": 1, "onnxruntime": 1}
    assert report.threads_requested == 1
    assert not report.thread_warnings()
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["environment"]["threads"] == {"tvm": 1, "pytorch": 1, "onnxruntime": 1}
    assert any(line.startswith("threads (as each runner's process reports them): TVM 1, "
                               "PyTorch eager 1, ONNX Runtime 1; asked for 1")
               for line in report.footer())
    md = (tmp_path / "out" / "report.md").read_text()
    assert '| threads | {"tvm": 1, "pytorch": 1, "onnxruntime": 1} |' in md
    assert "- threads (as each runner's process reports them): TVM 1," in md
    assert torch.get_num_threads() == before           # the baseline restores its setting


def test_bad_thread_counts_are_clear_errors(run_cli):
    from tvmflow.measure.bench import bench
    from tvmflow.measure.profile import profile
    from tvmflow.tuning.tune import tune
    for call in (lambda: bench("host", "pruned-a8", threads=0),
                 lambda: tune("pruned-a8", "host", trials=1, threads=-1),
                 lambda: profile("pruned-a8", "host", threads=0)):
        with pytest.raises(TvmflowError, match="--threads must be at least 1, got -?[01]"):
            call()
    res = run_cli("compare", "-v", "pruned,pruned-a8", "--threads", "0", timeout=120)
    assert res.returncode == 2, res.stderr
    assert "Error: Invalid value for '--threads': 0 is not in the range x>=1" in res.stderr
    assert "Traceback" not in res.stderr


# ----------------------------------------------------------------------------- warnings


def _report(threads: dict, asked: int = 2) -> BenchReport:
    rep = BenchReport("compare", "host", environment={"threads": threads,
                                                      "threads_requested": asked})
    r = VariantResult("pruned", 1, 1)
    r.latency["tvm"] = Latency([1e-3] * 10)
    rep.results.append(r)
    return rep


def test_report_warns_when_thread_counts_differ():
    rep = _report({"tvm": 1, "pytorch": 2, "onnxruntime": 2})
    warns = [w for w in rep.warnings() if "different thread counts" in w]
    assert len(warns) == 1 and "TVM 1, PyTorch eager 2, ONNX Runtime 2" in warns[0]
    assert any(line.startswith("Warning: the runners ran with different thread counts")
               for line in rep.footer())
    assert warns[0] in rep.to_dict()["warnings"]
    # a board (no baselines) with another count than asked
    board = _report({"tvm": 4}, asked=2)
    assert any("TVM ran 4 threads, 2 were asked for" in w for w in board.warnings())
    # all alike: no thread warning
    assert not _report({"tvm": 2, "pytorch": 2, "onnxruntime": 2}).thread_warnings()


def test_report_names_schedules_from_another_cpu():
    """compare on a CPU without its own schedule set says so: the warning, the table's
    trials cell and the JSON name the CPU the schedules were tuned on and this one."""
    from pathlib import Path
    from tvmflow.artifact.modules import schedule_set
    from tvmflow.artifact.package import Package
    from tvmflow.artifact.sidecar import Sidecar

    def _schedule_set(sidecar):
        base = {"variant": {"name": "pruned"}, "target": {"name": "host"},
                "input": {"seed": 0, "shape": [1, 3, 32, 32]}, "module": {"sha256": "x"}}
        return schedule_set(Package(Path("m.so"), Sidecar.from_json({**base, **sidecar})))
    rep = _report({"tvm": 2, "pytorch": 2, "onnxruntime": 2})
    sidecar = {"schedules": {"path": "x", "sha256": "0", "cpu": "emeraldrapids",
                             "running_on": "znver2", "match": "nearest",
                             "pipeline": {"layout": "NCHW"}}}
    rep.results[0].schedules = _schedule_set(sidecar)
    assert rep.results[0].cpu_mismatch == "tuned on emeraldrapids, running on znver2"
    warns = [w for w in rep.warnings() if "another CPU" in w]
    assert len(warns) == 1
    assert "pruned (tuned on emeraldrapids, running on znver2)" in warns[0]
    assert "tuned on emeraldrapids" in rep.rows()[0][1]
    back = type(rep).from_json(rep.to_json())
    assert back.results[0].cpu_mismatch == "tuned on emeraldrapids, running on znver2"
    # the set of this very CPU: nothing to say
    rep.results[0].schedules = _schedule_set({"schedules": {"path": "y", "sha256": "1", "cpu": "znver2",
                                                            "running_on": "znver2"}})
    assert not [w for w in rep.warnings() if "another CPU" in w]
