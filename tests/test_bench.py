"""``tvmflow bench``: local and RPC runs end to end, and every fault with a clear error.

Real tracker + servers on 127.0.0.1 (tvmflow.adapter.rpc); modules compiled once per module
by tvmflow compile into a private artifacts directory.  Few repeats, no timed assertions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tvmflow.adapter import rpc
from tvmflow.errors import TvmflowError

FAST = ["--warmup", "1", "--min-repeats", "4", "--min-time", "0", "--rounds", "2"]


def _env(artifacts=None, **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TVMFLOW_MODEL_PATH", "TVM_TRACKER_HOST", "TVM_TRACKER_PORT", "TVM_TRACKER_KEY")}
    env["COLUMNS"] = "200"
    if artifacts is not None:
        env["TVMFLOW_ARTIFACTS_DIR"] = str(artifacts)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def cli(*args, artifacts=None, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "tvmflow", *map(str, args)],
                          env=env or _env(artifacts), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def cluster():
    """A tracker with one host RPC server under key "bench-test", shared by the tests that
    only read from it (the one that kills its server starts its own)."""
    with rpc.local_rpc(1, key="bench-test") as c:
        yield c


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def test_bench_local_checks_output_and_records_everything(artifacts, tmp_path):
    out = tmp_path / "out"
    r = cli("bench", "-v", "pruned-a8", "--via", "local", *FAST, "-o", out, artifacts=artifacts)
    assert r.returncode == 0, r.stderr
    assert "First run pruned-a8: TVM" in r.stdout
    assert "compiling" not in r.stderr             # the fixture's module is fresh: reused
    for name in ("report.json", "report.csv", "report.md", "report.png"):
        assert (out / name).is_file()
    assert not (out / "report.partial.json").exists()
    rep = _report(out)
    res = rep["results"][0]
    assert res["variant"] == "pruned-a8"
    assert res["check"]["ok"] is True and res["check"]["max_abs_err"] <= 1e-4
    assert set(res["latency"]) == {"tvm", "torch", "onnxruntime"}       # same-run baselines
    for kind, lat in res["latency"].items():
        assert lat["n"] == len(lat["samples"]) >= 4, kind
        assert lat["p50_ci95"][0] <= lat["p50"] <= lat["p50_ci95"][1]
    assert res["first_run"]["tvm"]["was_first_call"] is True
    assert res["runners"]["torch"]["threads"] == rep["environment"]["target_dict"]["num-cores"]
    env = rep["environment"]
    for key in ("tvmflow", "tvm", "torch", "onnxruntime", "cpu", "gpu", "target_dict", "host",
                "emulated", "trials", "seeds"):
        assert key in env, key
    assert env["route_mode"] == "local" and env["emulated"] is False
    assert env["trials"] == {"pruned-a8": res["trials"]}


def test_bench_compiles_a_missing_module(tmp_path):
    arts = tmp_path / "arts"
    out = tmp_path / "out"
    r = cli("bench", "-v", "pruned-a8", "--via", "local", "--no-baselines", *FAST, "-o", out,
            artifacts=arts)
    assert r.returncode == 0, r.stderr
    assert "compiling pruned-a8 for host (not compiled yet)" in r.stderr
    assert (arts / "host" / "pruned-a8.so").is_file()
    assert _report(out)["results"][0]["module"] == str(arts / "host" / "pruned-a8.so")


def test_bench_through_tracker_key_from_environment(artifacts, cluster, tmp_path):
    out = tmp_path / "out"
    env = _env(artifacts, TVM_TRACKER_HOST=cluster.tracker_host,
               TVM_TRACKER_PORT=cluster.tracker_port, TVM_TRACKER_KEY="bench-test")
    r = cli("bench", "-v", "pruned-a8", "--no-baselines", *FAST, "-o", out, env=env)
    assert r.returncode == 0, r.stderr
    env = _report(out)["environment"]
    assert env["route_mode"] == "tracker" and env["server_arch"] == "x86_64"
    assert "bench-test" in env["route"]


def test_bench_direct_rpc_server(artifacts, tmp_path):
    out = tmp_path / "out"
    server = rpc.start_server()         # a server of no tracker: a direct session needs no key
    try:
        r = cli("bench", "-v", "pruned-a8", "--rpc", server.address, "--no-baselines", *FAST,
                "-o", out, artifacts=artifacts)
    finally:
        server.stop()
    assert r.returncode == 0, r.stderr
    assert _report(out)["environment"]["route_mode"] == "rpc"


def test_unreachable_server_is_a_clear_error(artifacts, tmp_path):
    port = rpc.find_free_port()
    r = cli("bench", "-v", "pruned-a8", "--rpc", f"127.0.0.1:{port}", "--timeout", "3",
            "-o", tmp_path / "out", artifacts=artifacts, timeout=120)
    assert r.returncode == 2
    assert f"Error: cannot reach the RPC server at 127.0.0.1:{port} (connection refused)" in r.stderr
    assert "Traceback" not in r.stderr


def test_unreachable_tracker_is_a_clear_error(artifacts, tmp_path):
    port = rpc.find_free_port()
    r = cli("bench", "-v", "pruned-a8", "--tracker", f"127.0.0.1:{port}", "--key", "k",
            "--timeout", "3", "-o", tmp_path / "out", artifacts=artifacts, timeout=120)
    assert r.returncode == 2
    assert f"cannot reach the RPC tracker at 127.0.0.1:{port}" in r.stderr
    assert "Traceback" not in r.stderr


def test_no_board_under_the_key(artifacts, cluster, tmp_path):
    r = cli("bench", "-v", "pruned-a8", "--tracker", cluster.tracker_address, "--key",
            "missing", "--timeout", "2", "-o", tmp_path / "out", artifacts=artifacts,
            timeout=120)
    assert r.returncode == 2
    assert "no RPC server is registered under key 'missing'" in r.stderr
    assert "keys there: bench-test" in r.stderr


def test_module_for_another_arch_is_refused_before_upload(cluster, tmp_path):
    from tvmflow.artifact.modules import ModuleRef
    from tvmflow.measure.bench import BenchOptions, run
    from tvmflow.runtime.session import Route
    from rpc_fixtures import AARCH64_TARGET, build_add_module
    so = build_add_module(tmp_path / "add-aarch64.so", AARCH64_TARGET, cross_cc="aarch64-linux-gnu-gcc")
    route = Route("tracker", cluster.tracker_address, "bench-test")
    with pytest.raises(TvmflowError) as info:
        run("host", [ModuleRef("pruned-a8", so, arch="aarch64")], route,
            options=BenchOptions(warmup=1, min_repeats=2, min_time=0, rounds=1))
    msg = str(info.value)
    assert "add-aarch64.so is built for aarch64 but the board under key 'bench-test'" in msg
    assert msg.split(" (tracker ")[1].split(")")[1].startswith(" is x86_64")
    assert "compile for the board's target" in msg


def test_cross_target_needs_a_board(tmp_path):
    r = cli("bench", "--target", "rpi4", "-v", "pruned-a8", "--via", "local",
            "-o", tmp_path / "out")
    assert r.returncode == 2
    assert "target rpi4 runs on aarch64, not on this machine" in r.stderr


def test_wrong_module_fails_the_output_check(artifacts):
    from tvmflow.artifact.modules import ModuleRef
    from tvmflow.measure.bench import BenchOptions, run
    from tvmflow.runtime.session import Route
    wrong = ModuleRef("pruned", artifacts / "host" / "pruned-a8.so", arch="x86_64")
    with pytest.raises(TvmflowError, match="pruned: the output on the device differs from PyTorch"):
        run("host", [wrong], Route("local"), options=BenchOptions(baselines=False))


def test_existing_report_is_not_overwritten_without_force(artifacts, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{\"keep\": 1}")
    r = cli("bench", "-v", "pruned-a8", "--via", "local", "-o", out, artifacts=artifacts)
    assert r.returncode == 2
    assert "already holds a report (report.json); refusing to overwrite it" in r.stderr
    assert "--force" in r.stderr
    assert (out / "report.json").read_text() == "{\"keep\": 1}"


def test_board_dying_mid_bench_keeps_partial_results(artifacts, tmp_path):
    out = tmp_path / "out"
    partial = out / "report.partial.json"
    with rpc.local_rpc(1, key="doomed") as cluster:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tvmflow", "bench", "-v", "pruned-a8", "--tracker",
             cluster.tracker_address, "--key", "doomed", "--no-baselines", "--warmup", "1",
             "--rounds", "400", "--min-repeats", "800", "--min-time", "0", "-o", str(out)],
            env=_env(artifacts), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    data = json.loads(partial.read_text())
                    if data["results"] and data["results"][0]["latency"].get("tvm", {}).get("n"):
                        break
                except (OSError, ValueError, KeyError):
                    pass
                time.sleep(0.2)
            assert proc.poll() is None, proc.communicate()
            cluster.servers[0].stop()              # the board dies
            _, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 2
    assert "Error: pruned-a8.so: timing failed on the board under key 'doomed'" in stderr
    assert f"the partial results measured so far are in {partial}" in stderr
    assert "Traceback" not in stderr
    data = json.loads(partial.read_text())
    assert data["partial"] is True and "timing failed" in data["error"]
    assert data["results"][0]["latency"]["tvm"]["n"] >= 2
    assert not (out / "report.json").exists()


def test_route_resolution_order():
    from tvmflow.runtime.session import resolve_route
    env = {"TVM_TRACKER_HOST": "127.0.0.1", "TVM_TRACKER_PORT": "9000", "TVM_TRACKER_KEY": "k"}
    assert resolve_route(environ={}).mode == "local"
    assert resolve_route(environ={}, default_via="rpc").mode == "local-rpc"
    r = resolve_route(environ=env, default_key="rpi4")
    assert (r.mode, r.address, r.key) == ("tracker", "127.0.0.1:9000", "k")
    assert resolve_route(environ=env, via="local").mode == "local"          # explicit wins
    r = resolve_route(environ=env, rpc="10.0.0.2:9090")
    assert (r.mode, r.address) == ("rpc", "10.0.0.2:9090")
    r = resolve_route(environ={}, tracker="h:1", default_key="rpi4")
    assert r.key == "rpi4"                                                  # preset's rpc_key
    with pytest.raises(TvmflowError, match="not both"):
        resolve_route(environ={}, rpc="a:1", tracker="b:2")
    with pytest.raises(TvmflowError, match="bad RPC server address"):
        resolve_route(environ={}, rpc="nohost")


def test_emulated_board_is_recognised(monkeypatch):
    from tvmflow import board
    from tvmflow.measure.environment import emulated_board
    from tvmflow.runtime.session import Route
    info = board.BoardInfo(name="emu0", key="rpi4-emu", host="127.0.0.1", port=9091, pid=1,
                           tracker="127.0.0.1:9190", tracker_owned=True, log="", root="")
    monkeypatch.setattr(board, "running_boards", lambda: [info])
    assert emulated_board(Route("tracker", "localhost:9190", "rpi4-emu"))
    assert emulated_board(Route("rpc", "127.0.0.1:9091"))
    assert not emulated_board(Route("tracker", "127.0.0.1:9190", "rpi4"))
    assert not emulated_board(Route("tracker", "10.1.1.1:9190", "rpi4-emu"))


def test_module_ref_reads_trials_seed_and_arch_from_the_sidecar(tmp_path):
    from tvmflow.artifact.modules import module_from_package
    from tvmflow.artifact.package import Package as P
    from tvmflow.artifact.sidecar import Sidecar

    def Package(path, side):
        return P(path, Sidecar.from_json(side))
    side = {"variant": {"name": "pruned"}, "input": {"seed": 3, "shape": [1, 3, 32, 32]},
            "target": {"name": "rpi4", "device": "cpu",
                       "target": {"kind": "llvm", "mtriple": "aarch64-linux-gnu"}},
            "weights": {"kind": "random", "seed": 3}, "module": {"sha256": "x"},
            "schedules": {"path": str(tmp_path), "sha256": "abc", "trials": 448}}
    ref = module_from_package("pruned", Package(tmp_path / "pruned.so", side))
    assert (ref.trials, ref.seed, ref.arch, ref.checkpoint) == (448, 3, "aarch64", None)
    # older sidecars: the trials come from the schedules' meta.json
    del side["schedules"]["trials"]
    (tmp_path / "meta.json").write_text('{"trials": 256}')
    assert module_from_package("pruned", Package(tmp_path / "p.so", side)).trials == 256
    side["schedules"] = None                                     # default schedules
    side["target"]["target"] = {"kind": "llvm"}
    ref = module_from_package("pruned", Package(tmp_path / "p.so", side))
    assert (ref.trials, ref.arch) == (None, "x86_64")


def test_board_of_another_arch_is_refused_before_compiling(tmp_path):
    server = rpc.start_server()
    try:
        r = cli("bench", "--target", "rpi4", "-v", "pruned-a8", "--rpc", server.address,
                "-o", tmp_path / "out", artifacts=tmp_path / "arts", timeout=120)
    finally:
        server.stop()
    assert r.returncode == 2
    assert (f"Error: target rpi4 compiles for aarch64 but the RPC server {server.address} is "
            "x86_64") in r.stderr
    assert "compiling" not in r.stderr and not (tmp_path / "arts").exists()


def test_one_runtime_for_local_and_remote(tmp_path):
    """The same LoadedModule calls run a module in this process (through TVM's
    rpc.LocalSession) and on an RPC server, with the same output; an executable built here
    and per-kernel timing (a Python callback) stay in this process."""
    import numpy as np
    import tvm
    from tvm.script import ir as I
    from tvm.script import relax as R
    from tvmflow.adapter.runtime import local_session
    from tvmflow.runtime.session import Route, open_session

    @I.ir_module
    class Mod:
        @R.function
        def main(x: R.Tensor((4, 8), "float32")):
            with R.dataflow():
                y = R.nn.relu(x)
                z = R.add(y, x)
                R.output(z)
            return (z,)
    ex = tvm.compile(Mod, target="llvm")
    so = tmp_path / "m.so"
    ex.export_library(str(so))
    x = np.random.default_rng(0).standard_normal((4, 8)).astype("float32")
    want = np.maximum(x, 0) + x
    here = local_session()
    assert type(here.remote).__name__ == "LocalSession"
    outs = {"local .so": here.load(so).infer(x), "local executable": here.load(ex).infer(x)}
    with open_session(Route("local-rpc"), timeout=30, threads=1) as remote:
        loaded = remote.load(so)
        outs["rpc .so"] = loaded.infer(x)
        assert loaded.time(3).shape == (3,) and loaded.calls == 1 + 3 + 1
        with pytest.raises(TvmflowError, match="per-kernel timing runs in this process"):
            loaded.kernels()
        with pytest.raises(TvmflowError, match="built in this process cannot run on the RPC"):
            remote.load(ex)
    for where, out in outs.items():
        np.testing.assert_allclose(out, want, rtol=1e-6, err_msg=where)
    loaded = here.load(so)
    loaded.set_input(x)
    timer = loaded.kernels()
    assert [c.name for c in timer.calls] == ["relu", "add"]
    assert timer.calls[1].shapes == [(4, 8), (4, 8), (4, 8)]
    assert all(t > 0 for c in timer.calls for t in timer.time(c, number=2, repeat=2))
