"""The CUDA path on a CPU machine: what would break on first contact with a GPU, met here.

A stub ``libcuda.so.1`` (scripts/gpu/stub_libcuda.c, built with gcc for the session) makes
TVM load its real CUDA runtime, so ``tvm.compile`` takes the path it takes where a driver is
installed; every device call then fails with CUDA_ERROR_NO_DEVICE.  Against it: compile for
h100 still packs exactly one nvcc sm_90 cubin (with and without CUDA graphs).  Without it:
every CUDA preset builds its design spaces, a dry-run tune (every candidate built, run times
made up) commits records, and compile applies them.  A round in which every candidate fails
stops the tune with the error.  The rest are the small pieces: arch-specific archs (sm_90a),
the GPU probe naming the missing piece, builder workers, the version without install
metadata, CUDA-event timing and the GPU baselines' reasons for being left out.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tvmflow.errors import TvmflowError

REPO = Path(__file__).resolve().parent.parent
CUDA_PRESETS = ("h100", "cuda", "jetson-orin")
VARIANT = "pruned-a8"


@pytest.fixture(scope="session")
def stub_driver(tmp_path_factory) -> Path:
    """A folder holding the stub libcuda.so.1 (put it on LD_LIBRARY_PATH)."""
    out = tmp_path_factory.mktemp("stub-driver")
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(out / "libcuda.so.1"),
                    str(REPO / "scripts" / "gpu" / "stub_libcuda.c")], check=True)
    return out


def _env(tmp_path: Path, stub: Path | None = None, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TVMFLOW_MODEL_PATH", "TVMFLOW_TARGET_PATH", "TVMFLOW_CUDA_ARCH",
                        "TVM_COMPILE_FORCE_FALLBACK", "LD_LIBRARY_PATH")}
    env.update(TVMFLOW_SCHEDULES=str(tmp_path / "schedules"),
               TVMFLOW_ARTIFACTS_DIR=str(tmp_path / "artifacts"), COLUMNS="200", **extra)
    if stub is not None:
        env["LD_LIBRARY_PATH"] = str(stub)
    return env


def _py(code: str, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _cli(env: dict[str, str], *args, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tvmflow", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------ the stub driver


def test_stub_driver_makes_tvm_see_a_driver(stub_driver, tmp_path):
    """The premise of the stub tests: with it TVM's CUDA runtime loads (without it, it does
    not), and the probe names what is missing in each case."""
    code = ("import json, tvm; from tvmflow.adapter.cuda import probe_gpu; "
            "print(json.dumps([tvm.runtime.enabled('cuda'), probe_gpu().to_json()]))")
    with_stub = _py(code, _env(tmp_path, stub_driver))
    assert with_stub.returncode == 0, with_stub.stderr[-2000:]
    enabled, probe = json.loads(with_stub.stdout.strip().splitlines()[-1])
    assert enabled is True
    assert probe["ok"] is False and "CUDA_ERROR_NO_DEVICE" in probe["missing"]
    bare = _py(code, _env(tmp_path))
    enabled, probe = json.loads(bare.stdout.strip().splitlines()[-1])
    assert enabled is False
    assert probe["ok"] is False and "libcuda.so.1 is not on the loader path" in probe["missing"]


def test_compile_h100_with_a_driver_present_packs_one_nvcc_cubin(stub_driver, tmp_path):
    """Finding 2: with a driver loaded, tvm.compile would compile the kernels with NVRTC and
    the nvcc rewrite would find a cubin already there; compile keeps the nvcc path.  The same
    module asked for with --cuda-graph is stale and recompiled, then up to date."""
    from tvmflow.adapter.cuda import cuda_images
    env = _env(tmp_path, stub_driver)
    path = tmp_path / "h100.so"
    for with_graph in (False, True):
        res = _cli(env, "compile", "--target", "h100", "-v", VARIANT, "-o", path,
                   *(["--cuda-graph"] if with_graph else []))
        assert res.returncode == 0, res.stderr[-3000:]
        assert ("compiled because: compiled without CUDA graphs, asked for --cuda-graph"
                in res.stdout) is with_graph
        assert ("replayed as a CUDA graph" in res.stdout) is with_graph
        assert cuda_images(path) == {"cubin": ["sm_90"], "ptx": False, "source": False}
        side = json.loads(path.with_suffix(".json").read_text())
        assert side["cuda"]["code"] == "cubin" and side["cuda"]["archs"] == ["sm_90"]
        assert side["cuda"]["cuda_graph"] is with_graph
        # Relax's CUDA-graph rewrite: the VM captures and replays the kernel launches
        assert (b"vm.builtin.cuda_graph.run_or_capture" in path.read_bytes()) is with_graph
    res = _cli(env, "compile", "--target", "h100", "-v", VARIANT, "-o", path, "--cuda-graph")
    assert res.returncode == 0 and "up to date" in res.stdout


def test_cuda_graph_needs_a_cuda_target(tmp_path):
    res = _cli(_env(tmp_path), "compile", "--target", "host", "-v", VARIANT, "--cuda-graph",
               timeout=120)
    assert res.returncode == 2 and "--cuda-graph needs a CUDA target" in res.stderr
    assert "Traceback" not in res.stderr


# ------------------------------------------------------------------ every CUDA preset


@pytest.fixture(scope="module")
def dry_tuned(tmp_path_factory):
    """Each CUDA preset: design spaces of every task, then a dry-run tune of 4 trials and a
    compile that applies its records -- one subprocess (the CUDA intrinsics import once)."""
    root = tmp_path_factory.mktemp("cuda-presets")
    script = f"""
import json
from tvmflow.adapter import pipeline
from tvmflow.adapter.tune import design_spaces
from tvmflow.artifact.compile import compile
from tvmflow.ir.frontend import import_model
from tvmflow.target.presets import get_target
from tvmflow.tuning.tune import tune
out = {{}}
model = import_model({VARIANT!r})
for name in {CUDA_PRESETS!r}:
    preset = get_target(name)
    tgt = preset.tvm_target()
    tasks = pipeline.extract_tasks(model.mod, tgt, pipeline.default_options(tgt, model.mod))
    spaces = design_spaces(tasks)
    res = tune({VARIANT!r}, name, trials=4, per_round=2, dry_run=True)
    pkg = compile({VARIANT!r}, name, model=model)
    out[name] = dict(spaces=spaces, trials=res.trials_total, sidecar=pkg.sidecar.to_json(),
                     log=str(res.log_dir))
print("RESULT " + json.dumps(out))
"""
    res = _py(script, _env(root), timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.mark.parametrize("name", CUDA_PRESETS)
def test_design_space_of_every_task(dry_tuned, name):
    """Finding 1: without max_threads_per_block the design space raised; now every task of
    every CUDA preset has a space, and some pass the GPU postprocessors."""
    spaces = dry_tuned[name]["spaces"]
    assert spaces and all(s["spaces"] >= 1 for s in spaces), spaces
    assert sum(s["passing"] for s in spaces) >= 1


@pytest.mark.parametrize("name", CUDA_PRESETS)
def test_dry_run_tune_commits_records_that_compile_applies(dry_tuned, name):
    from tvmflow.tuning import schedules as S
    res = dry_tuned[name]
    log = Path(res["log"])
    assert res["trials"] == 4 and S.check(log).ok and S.record_count(log) == 4
    meta = S.read_meta(log)
    assert meta["dry_run"] is True and meta["measured_on"].startswith("nowhere")
    sched = res["sidecar"]["schedules"]
    assert sched["dry_run"] is True and sched["trials"] == 4
    cov = res["sidecar"]["coverage"]
    assert cov["tuned"] >= 1, cov


def test_dry_and_measured_records_never_mix(tmp_path, monkeypatch):
    from tvmflow.tuning import schedules as S
    from tvmflow.tuning.tune import tune
    monkeypatch.setenv("TVMFLOW_SCHEDULES", str(tmp_path))
    log = S.schedule_dir("host", VARIANT, tmp_path)
    log.mkdir(parents=True)
    S.write_meta(log, {"variant": VARIANT, "dry_run": True, "trials": 2})
    with pytest.raises(TvmflowError, match="holds dry-run records; a measured run"):
        tune(VARIANT, "host", trials=4)
    with pytest.raises(TvmflowError, match="takes no --tracker"):
        tune(VARIANT, "host", trials=4, dry_run=True, tracker="127.0.0.1:9190", key="k")


def test_round_where_every_candidate_fails_stops_the_tune(tmp_path, monkeypatch):
    """Finding 4: an all-failed task scored infinity and took the whole budget, silently.
    (A few failed rounds are normal: one of the two CUDA design spaces of avg_pool2d fails
    TVM's lowering; the dry-run tunes above meet it.)"""
    from tvmflow.tuning import schedules as S
    from tvmflow.adapter import tune as ad
    from tvmflow.tuning.tune import tune
    monkeypatch.setenv("TVMFLOW_SCHEDULES", str(tmp_path))
    real = ad.make_dry_runner
    monkeypatch.setattr(ad, "make_dry_runner",
                        lambda fail=None: real(fail="RuntimeError: no kernel image (injected)"))
    with pytest.raises(TvmflowError) as info:
        tune(VARIANT, "host", trials=64, per_round=4, dry_run=True)
    msg = info.value.message
    # 16 candidates, the first 4 rounds of the task, all failed (not the whole budget of 64)
    assert "tuning stopped: every candidate of task" in msg and "(16 of 16, in 4 rounds)" in msg
    assert "run: RuntimeError: no kernel image (injected)" in msg
    assert S.record_count(S.schedule_dir("host", VARIANT, tmp_path)) < 64


# ------------------------------------------------------------------ targets and archs


def test_cuda_preset_without_max_threads_per_block_is_refused(tmp_path):
    from tvmflow.target.presets import load_preset
    text = (REPO / "targets" / "h100.toml").read_text()
    assert "max_threads_per_block = 1024" in text
    broken = tmp_path / "old-h100.toml"
    broken.write_text(text.replace("max_threads_per_block = 1024, ", ""))
    with pytest.raises(TvmflowError, match="needs max_threads_per_block"):
        load_preset(broken)
    for name in CUDA_PRESETS:
        assert load_preset(REPO / "targets" / f"{name}.toml").target["max_threads_per_block"] \
            == 1024


def test_arch_specific_sm_90a(tmp_path):
    """Finding 7: nvcc lists no "a" archs; sm_90a compiles, and reads back as sm_90a."""
    from tvmflow.adapter.cubin import _cubin_arch, compile_cubin
    from tvmflow.adapter.cuda import check_arch, find_nvcc
    nvcc = find_nvcc()
    check_arch(nvcc, "sm_90a")                      # listed base + compiles: accepted
    with pytest.raises(TvmflowError, match="cannot generate code for sm_91a"):
        check_arch(nvcc, "sm_91a")
    src = 'extern "C" __global__ void k(float *x) { x[threadIdx.x] += 1.0f; }\n'
    assert _cubin_arch(compile_cubin(src, "sm_90a", nvcc), 0) == "sm_90a"
    assert _cubin_arch(compile_cubin(src, "sm_90", nvcc), 0) == "sm_90"


def test_cli_compile_for_sm_90a(tmp_path):
    env = _env(tmp_path, TVMFLOW_CUDA_ARCH="sm_90a")
    res = _cli(env, "compile", "--target", "cuda", "-v", VARIANT, "-o", tmp_path / "a.so")
    assert res.returncode == 0, res.stderr[-3000:]
    from tvmflow.adapter.cuda import cuda_images
    assert cuda_images(tmp_path / "a.so")["cubin"] == ["sm_90a"]


def test_builders_get_cuda_path_and_build_under_the_target(monkeypatch):
    """Finding 3: NVRTC in the builder workers needs CUDA_PATH, and the arch from the target
    (not from opening the GPU in every worker)."""
    import tvm
    import tvm.driver
    from tvmflow.adapter.tune import builder_env, fast_build
    from tvmflow.target.presets import get_target
    tgt = get_target("h100").tvm_target()
    env = builder_env(tgt)
    assert Path(env["CUDA_PATH"], "include", "cuda_runtime.h").is_file()
    assert builder_env(get_target("host").tvm_target()) == {}
    seen = []
    monkeypatch.setattr(tvm.driver, "build", lambda mod, target: seen.append(
        tvm.target.Target.current(allow_none=True)))
    fast_build(tvm.IRModule(), tgt)
    assert seen and seen[0] is not None and seen[0].kind.name == "cuda"
    assert str(seen[0].attrs["arch"]) == "sm_90"


def test_default_builder_workers(monkeypatch):
    """Finding 5: a 16-core GPU machine built with 2 workers."""
    from tvmflow.target import presets as targets
    from tvmflow.tuning.tune import default_workers
    h100, host = targets.get_target("h100"), targets.get_target("host")
    monkeypatch.setattr(targets, "host_cores", lambda: 16)
    assert default_workers(h100) == 14 and default_workers(host) == 2
    monkeypatch.setattr(targets, "host_cores", lambda: 2)
    assert default_workers(h100) == 1 and default_workers(host) == 2


def test_workers_option_is_checked(tmp_path):
    res = _cli(_env(tmp_path), "tune", "-v", VARIANT, "--target", "h100", "--dry-run",
               "--workers", "0", timeout=120)
    assert res.returncode == 2 and "'--workers': 0 is not in the range x>=1" in res.stderr


# ------------------------------------------------------------------ version, baselines


def test_version_without_install_metadata(monkeypatch):
    """Finding 9: from a source tree on PYTHONPATH the version read "unknown", so every
    shipped module looked stale (and was recompiled)."""
    import importlib.metadata as md
    import tvmflow
    from tvmflow._version import __version__
    from tvmflow.artifact.package import tvmflow_version
    assert md.version("tvmflow") == __version__        # pyproject reads the same file
    def missing(name):
        raise md.PackageNotFoundError(name)
    monkeypatch.setattr(md, "version", missing)
    assert tvmflow_version() == __version__ == tvmflow.__version__ != "unknown"


def test_event_times_reads_every_event_after_one_synchronize():
    from tvmflow.measure.baselines import event_times
    clock = {"t": 0.0, "synced": 0}

    class Event:
        def record(self):
            self.t = clock["t"]

        def elapsed_time(self, other):
            assert clock["synced"] == 1          # read only after the final synchronize
            return other.t - self.t

    def call():
        clock["t"] += 2.5                       # each run takes 2.5 ms on the "device"

    def sync():
        clock["synced"] += 1

    times = event_times(call, 5, Event, sync)
    assert clock["synced"] == 1 and np.allclose(times, 2.5e-3) and len(times) == 5


def test_gpu_baselines_say_why_they_are_left_out():
    """Without a GPU each GPU baseline is left out with its reason; none raises."""
    import torch
    from tvmflow.measure.baselines import GPU_BASELINES, make_gpu_baselines
    model = torch.nn.Conv2d(3, 4, 3)
    x = np.zeros((1, 3, 8, 8), np.float32)
    runners, skipped = make_gpu_baselines("m", model, x, 1)
    assert runners == [] and set(skipped) == set(GPU_BASELINES)
    assert "sees no CUDA GPU" in skipped["torch-cuda"]
    assert "CUDA execution provider" in skipped["onnxruntime-cuda"]
    with pytest.raises(TvmflowError, match="unknown GPU baseline"):
        make_gpu_baselines("m", model, x, 1, kinds=("tensorrt",))


def test_bench_refuses_a_cuda_target_without_gpu(tmp_path):
    res = _cli(_env(tmp_path), "bench", "--target", "h100", "-v", VARIANT, "--cuda-graph",
               timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "CUDA" in res.stderr and "libcuda.so.1" in res.stderr


# ------------------------------------------------------------------ the GPU packer


def _pack():
    import importlib.util
    spec = importlib.util.spec_from_file_location("gpu_pack", REPO / "scripts" / "gpu" / "pack.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _wheel(path: Path, name: str, version: str, requires: list[str]) -> Path:
    """A minimal wheel with a correct RECORD."""
    import base64
    import hashlib
    import zipfile
    files = {f"{name}/__init__.py": b"x = 1\n",
             f"{name}-{version}.dist-info/METADATA":
                 (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                  + "".join(f"Requires-Dist: {r}\n" for r in requires)).encode()}
    rows = [f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}"
            for n, d in files.items()]
    rows.append(f"{name}-{version}.dist-info/RECORD,,")
    files[f"{name}-{version}.dist-info/RECORD"] = ("\n".join(rows) + "\n").encode()
    whl = path / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, d in files.items():
            zf.writestr(n, d)
    return whl


def test_packer_checks_requirements_and_records(tmp_path):
    """A carried wheel needing what neither the carry nor the GPU image has fails the pack
    (not the GPU run), as does a wheel whose members do not match its RECORD."""
    import zipfile
    pack = _pack()
    good = _wheel(tmp_path, "tornado", "6.6.1", ["numpy", 'pytest; extra == "test"'])
    assert pack.verify_record(good) == 3
    carry = {d: good for d in pack.PINS}
    assert pack.check_requirements(carry) == [
        "note: torch: 2.11.0 there (pyproject pins 2.13.0 for the CPU wheel)",
        "note: torchvision: 0.26.0 there, with its torch (pyproject pins 0.28.0)",
        "note: xgboost: carried as xgboost-cpu"]
    (tmp_path / "b").mkdir()
    needy = _wheel(tmp_path / "b", "tornado", "6.6.1", ["left-pad>=1; python_version >= '3.8'"])
    with pytest.raises(pack.PackError, match=r"left-pad \(needed by tornado"):
        pack.check_requirements(dict(carry, tornado=needy))
    with pytest.raises(pack.PackError, match=r"apache-tvm-ffi \(needed by tvmflow"):
        pack.check_requirements({d: good for d in pack.PINS if d != "apache-tvm-ffi"})
    bad = tmp_path / "bad.whl"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for n in src.namelist():
            dst.writestr(n, b"y = 2\n" if n.endswith("__init__.py") else src.read(n))
    with pytest.raises(pack.PackError, match="does not match its RECORD"):
        pack.verify_record(bad)
    # the stored copy keeps every member's bytes
    with zipfile.ZipFile(good) as a, zipfile.ZipFile(__import__("io").BytesIO(
            pack.stored_copy(good))) as b:
        assert {n: a.read(n) for n in a.namelist()} == {n: b.read(n) for n in b.namelist()}
        assert all(i.compress_type == zipfile.ZIP_STORED for i in b.infolist())


def test_parts_fit_and_device_receive_checks_them(tmp_path):
    """The parts are at most --part-mib each; device.sh's receive takes the intact ones and
    names the missing or damaged one (exit 4)."""
    pack = _pack()
    blob = os.urandom(5 * 2**20 + 123)
    listing = [{"file": "w.whl", "name": "w", "version": "1", "sha256": "0", "members": 1}]
    repo = tmp_path / "repo"
    (repo / "scripts" / "gpu").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "gpu" / "device.sh", repo / "scripts" / "gpu")
    dirs = pack.write_parts(blob, listing, repo / ".gpu", 2.0)
    assert [d.name for d in dirs] == ["part1", "part2", "part3"]
    sizes = [next(d.glob("carry.tar.xz.*")).stat().st_size for d in dirs]
    assert max(sizes) <= 2 * 2**20 and sum(sizes) == len(blob)
    manifest = json.loads((dirs[0] / "manifest.json").read_text())
    assert b"".join(next(d.glob("carry.tar.xz.*")).read_bytes() for d in dirs) == blob
    assert manifest["bytes"] == len(blob)
    state = tmp_path / "state"
    env = dict(os.environ, TVMFLOW_GPU_STATE=str(state), TVMFLOW_GPU_PYTHON=sys.executable)
    shutil.move(str(dirs[2]), tmp_path / "later")           # part 3 not carried yet
    part2 = next(dirs[1].glob("carry.tar.xz.*"))
    part2.write_bytes(b"damaged" + part2.read_bytes()[7:])
    res = subprocess.run(["bash", str(repo / "scripts/gpu/device.sh"), "receive"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 4, res.stdout + res.stderr
    assert "1 of 3 here and intact; missing: carry.tar.xz.02, carry.tar.xz.03" in res.stdout
    shutil.rmtree(repo / ".gpu")
    (repo / ".gpu").mkdir()
    shutil.move(str(tmp_path / "later"), repo / ".gpu" / "part3")
    res = subprocess.run(["bash", str(repo / "scripts/gpu/device.sh"), "receive"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 4 and "2 of 3 here" in res.stdout     # part 2 must come again
