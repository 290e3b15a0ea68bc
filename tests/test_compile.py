"""tvmflow compile / run: .so + sidecar for host, aarch64 (cross) and CUDA (cubin, no GPU).

All five variants are compiled for the host, and two (grouped, pruned-a8: the most and the
fewest tasks) for rpi4, jetson-orin and h100, once per module (module-scoped fixtures,
in-process; what a cross or CUDA build must hold does not depend on the variant); the tests
check the artifacts' properties, the host
modules' outputs against PyTorch, and the CLI's errors (message + exit code 2).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct

import numpy as np
import pytest

from tvmflow.errors import TvmflowError

VARIANTS = ("original", "grouped", "grouped-wide", "pruned", "pruned-a8")
CROSS = ("grouped", "pruned-a8")  # the variants compiled for the cross and CUDA targets
EM_X86_64, EM_AARCH64, EM_CUDA = 62, 183, 190


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """An empty schedules root and artifacts dir for the whole module (no shipped logs)."""
    root = tmp_path_factory.mktemp("compile-env")
    (root / "schedules").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TVMFLOW_SCHEDULES", str(root / "schedules"))
        mp.setenv("TVMFLOW_ARTIFACTS_DIR", str(root / "artifacts"))
        for var in ("TVMFLOW_TARGET_PATH", "TVMFLOW_CUDA_ARCH", "TVMFLOW_NVCC"):
            mp.delenv(var, raising=False)
        yield root


@pytest.fixture(scope="module")
def models(env):
    """Each variant imported once (seed 0), shared by the four targets' compiles."""
    from tvmflow.ir.frontend import import_model
    return {v: import_model(v, seed=0) for v in VARIANTS}


def _compile_all(target, env, models, variants=VARIANTS):
    from tvmflow.artifact.compile import compile
    out = env / "out" / target
    # default schedules (the shipped host sets are searched too: not these tests' subject)
    return {v: compile(v, target, out / f"{v}.so", seed=0, model=models[v], schedules=False)
            for v in variants}


@pytest.fixture(scope="module")
def host_pkgs(env, models):
    return _compile_all("host", env, models)


@pytest.fixture(scope="module")
def rpi4_pkgs(env, models):
    return _compile_all("rpi4", env, models, CROSS)


@pytest.fixture(scope="module")
def orin_pkgs(env, models):
    return _compile_all("jetson-orin", env, models, CROSS)


@pytest.fixture(scope="module")
def h100_pkgs(env, models):
    return _compile_all("h100", env, models, CROSS)


# ------------------------------------------------------------------ helpers (independent of tvmflow)


def sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def elf_machine(path) -> int:
    data = open(path, "rb").read(20)
    assert data[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return struct.unpack_from("<H", data, 18)[0]


def embedded_cubins(path) -> list[str]:
    """SM archs of the CUDA ELF images (EM_CUDA) embedded in a .so."""
    data = open(path, "rb").read()
    archs, pos = [], data.find(b"\x7fELF", 1)
    while pos != -1:
        if struct.unpack_from("<H", data, pos + 18)[0] == EM_CUDA:
            flags = struct.unpack_from("<I", data, pos + 48)[0]
            sm = (flags >> 8) & 0xFF if data[pos + 8] >= 8 else flags & 0xFF
            archs.append(f"sm_{sm}")
        pos = data.find(b"\x7fELF", pos + 1)
    return archs


def cuda_entry(path) -> tuple[bytes, bytes]:
    """(fmt, data) of the ``cuda`` module in the .so's packed-imports blob.

    The blob stores each imported module as ``key`` then ``payload``; a cuda payload is
    ``fmt``, the function-info map, then ``data`` -- what TVM's CUDA loader reads.  Strings are
    a little-endian uint64 length + bytes.
    """
    blob = open(path, "rb").read()
    key = struct.pack("<Q", 4) + b"cuda"
    pos = blob.find(key)
    while pos != -1:
        (n,) = struct.unpack_from("<Q", blob, pos + 12)
        payload = blob[pos + 20:pos + 20 + n]
        (flen,) = struct.unpack_from("<Q", payload, 0)
        if flen < 16:
            fmt = payload[8:8 + flen]
            # data is the payload's last string: find the length field that reaches the end
            for start in range(8 + flen, len(payload) - 8):
                (dlen,) = struct.unpack_from("<Q", payload, start)
                if start + 8 + dlen == len(payload):
                    return fmt, payload[start + 8:]
        pos = blob.find(key, pos + 1)
    raise AssertionError(f"no cuda module entry in {path}")


def check_sidecar(pkg, target, variant):
    side = json.loads(pkg.sidecar_path.read_text())
    assert pkg.sidecar_path == pkg.path.with_suffix(".json")
    assert side["module"]["sha256"] == sha256(pkg.path)
    assert side["module"]["bytes"] == os.path.getsize(pkg.path)
    assert side["variant"]["name"] == variant
    from tvmflow.spec.registry import get_spec
    assert side["variant"]["cfg"] == json.loads(json.dumps(get_spec(variant).cfg()))
    assert side["target"]["name"] == target
    assert side["weights"] == {"kind": "random", "seed": 0}
    assert side["input"] == {"name": side["input"]["name"], "shape": [1, 3, 32, 32],
                             "dtype": "float32", "seed": 0}
    assert set(side["versions"]) >= {"tvmflow", "tvm", "torch"}
    assert side["format"] == 2 and side["build"]["reproducible"] is True
    assert "g++" in side["build"]["linker"] and side["build"]["linker_version"]
    assert side["schedules"] is None
    cov = side["coverage"]
    assert cov["tasks"] > 0 and cov["tuned"] == 0 and cov["default"] == cov["tasks"]
    # no temp files left next to the module
    assert not [p for p in pkg.path.parent.iterdir() if p.name.startswith(".")]
    return side


# ------------------------------------------------------------------ host


def test_host_modules_match_pytorch(host_pkgs):
    from tvmflow.ir.frontend import torch_model_for
    from tvmflow.spec.registry import get_spec
    from tvmflow.runtime.run import run
    for variant, pkg in host_pkgs.items():
        side = check_sidecar(pkg, "host", variant)
        assert elf_machine(pkg.path) == EM_X86_64
        assert side["target"]["target"]["num-cores"] == len(os.sched_getaffinity(0))
        assert side["target"]["detected"]["mcpu"] == side["target"]["target"]["mcpu"]
        assert "cuda" not in side
        res = run(pkg.path)
        import torch
        from tvmflow.spec.nin import example_input
        x = example_input(get_spec(variant), 0)
        with torch.no_grad():
            ref = torch_model_for(get_spec(variant), 0)(x).numpy()
        assert res.output.shape == ref.shape == (1, 10)
        err = float(np.max(np.abs(res.output - ref)))
        assert err <= 1e-4, f"{variant}: max abs error {err}"


def test_cli_run_host_module_matches_pytorch(host_pkgs, run_cli, tmp_path):
    from tvmflow.ir.frontend import import_model
    pkg = host_pkgs["pruned-a8"]
    out = tmp_path / "y.npy"
    res = run_cli("run", "--module", pkg.path, "-o", out)
    assert res.returncode == 0, res.stderr
    assert "seed 0" in res.stdout and str(out) in res.stdout
    model = import_model("pruned-a8", seed=0)
    y = np.load(out)
    assert float(np.max(np.abs(y - model.reference(model.example_input())))) <= 1e-4
    # the same with an explicit input file, and printing instead of saving
    x = tmp_path / "x.npy"
    np.save(x, model.example_input(seed=3))
    res = run_cli("run", "--module", pkg.path, "--input", x)
    assert res.returncode == 0, res.stderr
    assert "top classes" in res.stdout
    top = int(np.argmax(model.reference(model.example_input(seed=3))))
    assert res.stdout.split("top classes: ")[1].startswith(f"{top}:")


def test_run_input_errors(host_pkgs, run_cli, tmp_path):
    pkg = host_pkgs["grouped"]
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((1, 3, 28, 28), "float32"))
    res = run_cli("run", "--module", pkg.path, "--input", bad)
    assert res.returncode == 2 and "has shape (1, 3, 28, 28)" in res.stderr
    res = run_cli("run", "--module", tmp_path / "nothing.so")
    assert res.returncode == 2 and "does not exist" in res.stderr


def test_package_load_detects_tampering(host_pkgs, tmp_path):
    from tvmflow.artifact.compile import stale_reason
    from tvmflow.artifact.package import Package
    src = host_pkgs["grouped"]
    assert stale_reason(src.path, schedules_info=None) is None     # compiled without a log
    assert "schedule database changed (compiled with none" in stale_reason(
        src.path, schedules_info={"path": "/s", "sha256": "ab" * 32})
    copy = tmp_path / "g.so"
    shutil.copy(src.path, copy)
    shutil.copy(src.sidecar_path, copy.with_suffix(".json"))
    assert Package.load(copy).sha256 == src.sha256
    with open(copy, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(TvmflowError, match="does not match its sidecar"):
        Package.load(copy)
    assert "does not match" in stale_reason(copy)
    # sidecar says another tvmflow version / another variant cfg -> stale
    shutil.copy(src.path, copy)
    side = json.loads(src.sidecar_path.read_text())
    side["versions"]["tvmflow"] = "0.0.0"
    copy.with_suffix(".json").write_text(json.dumps(side))
    assert "tvmflow 0.0.0" in stale_reason(copy)
    side = json.loads(src.sidecar_path.read_text())
    side["variant"]["cfg"]["channels"][0] = 7
    copy.with_suffix(".json").write_text(json.dumps(side))
    assert "changed" in stale_reason(copy)
    copy.unlink()
    assert "missing" in stale_reason(copy)


def test_interrupted_compile_keeps_previous_module(host_pkgs, models, tmp_path, monkeypatch):
    """A compile that dies while writing the .so leaves the old module and no temp file."""
    import tvmflow.adapter.build as build
    from tvmflow.artifact.compile import compile
    from tvmflow.artifact.package import Package
    src = host_pkgs["pruned-a8"]
    dest = tmp_path / "m.so"
    shutil.copy(src.path, dest)
    shutil.copy(src.sidecar_path, dest.with_suffix(".json"))
    before = sha256(dest)

    def dying_export(executable, path, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"\x7fELF half a module")
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "export_library", dying_export)
    with pytest.raises(KeyboardInterrupt):
        compile("pruned-a8", "host", dest, seed=0, model=models["pruned-a8"], schedules=False)
    assert sha256(dest) == before
    assert Package.load(dest).sha256 == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.so"]


# ------------------------------------------------------------------ aarch64 (cross)


def test_rpi4_modules_are_aarch64(rpi4_pkgs, run_cli):
    for variant, pkg in rpi4_pkgs.items():
        side = check_sidecar(pkg, "rpi4", variant)
        assert elf_machine(pkg.path) == EM_AARCH64
        assert side["cross_compiler"].endswith("aarch64-linux-gnu-g++")
        assert side["target"]["target"]["mcpu"] == "cortex-a72"
    res = run_cli("run", "--module", rpi4_pkgs["grouped"].path)
    assert res.returncode == 2
    assert "aarch64" in res.stderr and "x86_64" in res.stderr and "rpi4" in res.stderr


# ------------------------------------------------------------------ CUDA without a GPU


@pytest.mark.parametrize("fixture,target,arch,host_machine", [
    ("orin_pkgs", "jetson-orin", "sm_87", EM_AARCH64),
    ("h100_pkgs", "h100", "sm_90", EM_X86_64),
])
def test_cuda_modules_hold_cubin(request, fixture, target, arch, host_machine):
    pkgs = request.getfixturevalue(fixture)
    for variant, pkg in pkgs.items():
        side = check_sidecar(pkg, target, variant)
        assert elf_machine(pkg.path) == host_machine
        assert embedded_cubins(pkg.path) == [arch], variant
        fmt, data = cuda_entry(pkg.path)
        assert fmt == b"cubin" and data[:4] == b"\x7fELF"
        assert struct.unpack_from("<H", data, 18)[0] == EM_CUDA
        data = pkg.path.read_bytes()
        assert b'extern "C" __global__' not in data  # no CUDA source
        assert b".target sm_" not in data and b".version " not in data  # no PTX
        assert side["cuda"]["code"] == "cubin" and side["cuda"]["archs"] == [arch]
        assert side["target"]["target"]["arch"] == arch


def test_cuda_module_refused_without_gpu(h100_pkgs, run_cli):
    res = run_cli("run", "--module", h100_pkgs["grouped"].path)
    assert res.returncode == 2
    assert "needs a CUDA GPU (sm_90)" in res.stderr


def test_cli_compile_cuda_alias(env, run_cli, monkeypatch, tmp_path):
    """`--target cuda` with the user's arch; the terminal says cubin; default output path."""
    monkeypatch.setenv("TVMFLOW_CUDA_ARCH", "sm_86")
    res = run_cli("compile", "--target", "cuda", "--variant", "pruned-a8")
    assert res.returncode == 0, res.stderr
    path = env / "artifacts" / "cuda" / "pruned-a8.so"
    assert str(path) in res.stdout and "cubin" in res.stdout and "sm_86" in res.stdout
    assert embedded_cubins(path) == ["sm_86"]
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["target"]["detected"]["arch"].startswith("sm_86")
    # up to date: reused without compiling
    res = run_cli("compile", "--target", "cuda", "--variant", "pruned-a8")
    assert res.returncode == 0 and "up to date" in res.stdout


# ------------------------------------------------------------------ CLI errors


def test_output_dir_not_writable(run_cli, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    res = run_cli("compile", "--target", "rpi4", "--variant", "grouped", "-o", blocker / "x.so")
    assert res.returncode == 2
    assert "cannot create output directory" in res.stderr and str(blocker) in res.stderr


def test_output_must_be_so(run_cli, tmp_path):
    res = run_cli("compile", "--target", "rpi4", "--variant", "grouped", "-o", tmp_path / "x.bin")
    assert res.returncode == 2 and "must end in .so" in res.stderr


def _log_dir(env, target, variant):
    """The target's own set (``<target>/<cpu>/<variant>``: cortex-a72 for rpi4)."""
    from tvmflow.target.presets import get_target
    d = env / "schedules" / target / get_target(target).cpu_key / variant
    d.mkdir(parents=True, exist_ok=True)
    return d


def test_corrupt_schedule_database(env, run_cli, tmp_path):
    d = _log_dir(env, "rpi4", "grouped")
    try:
        (d / "database_workload.json").write_text('["123", {"bad": 1}]\n')
        (d / "database_tuning_record.json").write_text('[0, [[], [0.001], {"kind": "ll')
        res = run_cli("compile", "--target", "rpi4", "--variant", "grouped", "-o", tmp_path / "g.so")
        assert res.returncode == 2
        assert "is corrupt" in res.stderr and str(d) in res.stderr
        assert not (tmp_path / "g.so").exists()
    finally:
        shutil.rmtree(d)


def test_schedule_database_for_other_variant_or_target(env, run_cli, tmp_path):
    d = _log_dir(env, "rpi4", "pruned")
    try:
        (d / "database_workload.json").write_text("")
        (d / "database_tuning_record.json").write_text("")
        (d / "meta.json").write_text(json.dumps({"variant": "original"}))
        res = run_cli("compile", "--target", "rpi4", "--variant", "pruned", "-o", tmp_path / "p.so")
        assert res.returncode == 2 and "tuned for variant 'original', not 'pruned'" in res.stderr
        (d / "meta.json").write_text(json.dumps({"variant": "pruned", "target": {
            "kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "znver2"}}))
        res = run_cli("compile", "--target", "rpi4", "--variant", "pruned", "-o", tmp_path / "p.so")
        assert res.returncode == 2 and "tuned for another target" in res.stderr
        assert "mtriple 'x86_64-linux-gnu'" in res.stderr
    finally:
        shutil.rmtree(d)


def test_cubin_compatibility_rule():
    from tvmflow.adapter.cuda import cubin_runs_on
    assert cubin_runs_on("sm_87", "sm_87") and cubin_runs_on("sm_86", "sm_89")
    assert not cubin_runs_on("sm_90", "sm_86") and not cubin_runs_on("sm_87", "sm_86")
    assert not cubin_runs_on("sm_80", "sm_90")
    assert cubin_runs_on("sm_90a", "sm_90") and not cubin_runs_on("sm_90a", "sm_91")


# ------------------------------------------------------------------ reproducible, nothing lost

PORTABLE = """\
name = "portable"
description = "x86-64-v2: code any x86-64 machine of the last decade runs"
device = "cpu"
rpc_key = "portable"
target = { kind = "llvm", mtriple = "x86_64-linux-gnu", mcpu = "x86-64-v2" }
"""


def test_same_inputs_give_the_same_module_and_nothing_is_overwritten(env, run_cli, tmp_path,
                                                                     monkeypatch):
    """Two compiles (two processes, two paths) of one variant, log and seed: the same .so
    sha256.  The second goes over a user's files: refused, then replaced with --force;
    tvmflow's own stale module is replaced without it.  run -o: an existing file is refused,
    replaced with --force."""
    from tvmflow.ir.frontend import import_model
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "portable.toml").write_text(PORTABLE)
    monkeypatch.setenv("TVMFLOW_TARGET_PATH", str(tmp_path / "targets"))
    a, b = tmp_path / "a" / "m.so", tmp_path / "b" / "other.so"
    b.parent.mkdir()
    b.write_bytes(b"\x7fELF the user's")
    args = ("compile", "-t", "portable", "-v", "pruned-a8")
    res = run_cli(*args, "-o", a, isolated=True)
    assert res.returncode == 0, res.stderr
    res = run_cli(*args, "-o", b)
    assert res.returncode == 2 and "has no sidecar other.json" in res.stderr
    assert b.read_bytes() == b"\x7fELF the user's"
    res = run_cli(*args, "-o", b, "--force", isolated=True)
    assert res.returncode == 0, res.stderr
    assert sha256(a) == sha256(b)
    side_a, side_b = (json.loads(p.with_suffix(".json").read_text()) for p in (a, b))
    assert side_a["module"]["sha256"] == side_b["module"]["sha256"] == sha256(a)
    assert side_a["build"]["reproducible"] is True and "why_not" not in side_a["build"]
    # tvmflow's own module, stale (another seed): replaced, no --force needed
    res = run_cli(*args, "-o", a, "--seed", "1")
    assert res.returncode == 0 and "compiled with seed 0, asked for 1" in res.stdout, res.stderr
    assert json.loads(a.with_suffix(".json").read_text())["input"]["seed"] == 1
    # run -o over an existing file
    out = tmp_path / "y.npy"
    np.save(out, np.zeros(3))
    res = run_cli("run", "--module", b, "-o", out)
    assert res.returncode == 2 and "already exists; not overwriting it" in res.stderr
    assert np.load(out).shape == (3,)
    res = run_cli("run", "--module", b, "-o", out, "--force")
    assert res.returncode == 0, res.stderr
    model = import_model("pruned-a8", seed=0)
    assert float(np.max(np.abs(np.load(out) - model.reference(model.example_input())))) <= 1e-4


@pytest.mark.parametrize("fixture,target", [("rpi4_pkgs", "rpi4"), ("h100_pkgs", "h100")])
def test_cross_and_cuda_builds_are_reproducible(request, fixture, target, run_cli, tmp_path):
    """The module the fixture compiled in this process, and one compiled again by the CLI in
    another process to another path (the cross linker; nvcc's cubin): the same bytes."""
    pkg = request.getfixturevalue(fixture)["pruned-a8"]
    again = tmp_path / "again.so"
    res = run_cli("compile", "-t", target, "-v", "pruned-a8", "-o", again)
    assert res.returncode == 0, res.stderr
    assert sha256(again) == sha256(pkg.path) == pkg.sha256
