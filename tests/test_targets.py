"""Target presets: listing, detection, user presets, and their errors (real CLI, exit code 2)."""

from __future__ import annotations

import json
import os
import textwrap

import pytest

from tvmflow.errors import TvmflowError
from tvmflow.target.presets import get_target

BUILTIN = {"host", "rpi4", "jetson-orin", "h100", "cuda"}

RPI_LIKE = textwrap.dedent("""\
    name = "{name}"
    description = "test board"
    device = "cpu"
    rpc_key = "{name}"
    cross_compiler = "{cc}"
    target = {{ kind = "llvm", mtriple = "aarch64-linux-gnu", mcpu = "{mcpu}", mattr = ["+neon"], num-cores = 4 }}
    """)


def run_with(run_cli, *args, env=None):
    """run_cli with extra environment variables (TVMFLOW_TARGET_PATH, TVMFLOW_CUDA_ARCH)."""
    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        return run_cli(*args)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in ("TVMFLOW_TARGET_PATH", "TVMFLOW_CUDA_ARCH", "TVMFLOW_NVCC"):
        monkeypatch.delenv(var, raising=False)


def test_targets_json_lists_presets(run_cli):
    res = run_cli("targets", "--json")
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert set(rows) == BUILTIN
    for r in rows.values():
        for key in ("device", "target", "host", "cross_compiler", "rpc_key", "detected", "toolchain"):
            assert key in r
    host = rows["host"]
    assert host["target"]["num-cores"] == len(os.sched_getaffinity(0))
    assert host["detected"]["num-cores"] == host["target"]["num-cores"]
    assert host["target"]["mcpu"] == host["detected"]["mcpu"] != "auto"
    # code for the exact CPU detected, whose name also keys its tuning logs
    assert host["target"]["mcpu"] == host["detected"]["llvm_cpu"] == host["cpu_key"]
    rpi = rows["rpi4"]
    assert rpi["target"] == {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72",
                             "mattr": ["+neon"], "num-cores": 4}
    assert rpi["cross_compiler"] == "aarch64-linux-gnu-g++" and rpi["cpu_key"] == "cortex-a72"
    assert rows["jetson-orin"]["target"]["arch"] == "sm_87"
    assert rows["jetson-orin"]["host"]["mcpu"] == "cortex-a78ae"
    assert rows["h100"]["target"]["arch"] == rows["h100"]["cpu_key"] == "sm_90"
    assert rows["h100"]["host"]["mtriple"].startswith("x86_64")


def test_targets_table(run_cli):
    res = run_cli("targets")
    assert res.returncode == 0, res.stderr
    for name in BUILTIN:
        assert name in res.stdout
    assert "aarch64-linux-gnu-g++" in res.stdout and "sm_87" in res.stdout


def test_cuda_alias_follows_env(monkeypatch):
    assert get_target("cuda").arch == "sm_90"
    monkeypatch.setenv("TVMFLOW_CUDA_ARCH", "sm_86")
    preset = get_target("cuda")
    assert preset.arch == "sm_86" and preset.target["arch"] == "sm_86"
    assert "TVMFLOW_CUDA_ARCH" in preset.detected["arch"]
    assert preset.tvm_target() is not None  # TVM accepts it


def test_user_board_file_is_found_first(tmp_path, monkeypatch, run_cli):
    (tmp_path / "myboard.toml").write_text(RPI_LIKE.format(name="myboard", cc="aarch64-linux-gnu-g++",
                                                           mcpu="cortex-a53"))
    (tmp_path / "rpi4.toml").write_text(RPI_LIKE.format(name="rpi4", cc="aarch64-linux-gnu-g++",
                                                        mcpu="cortex-a55"))
    monkeypatch.setenv("TVMFLOW_TARGET_PATH", str(tmp_path))
    assert get_target("myboard").target["mcpu"] == "cortex-a53"
    assert get_target("rpi4").target["mcpu"] == "cortex-a55"  # the user's file shadows the shipped one
    res = run_cli("targets", "--json")
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert set(rows) == BUILTIN | {"myboard"}
    assert rows["rpi4"]["source"] == str(tmp_path / "rpi4.toml")


# ------------------------------------------------------------------ errors (CLI, exit code 2)


def test_unknown_target_suggests_close_names(run_cli):
    res = run_cli("compile", "--target", "rpi5", "--variant", "original")
    assert res.returncode == 2
    assert "unknown target 'rpi5'" in res.stderr and "did you mean rpi4" in res.stderr
    assert "Traceback" not in res.stderr
    res = run_cli("compile", "--target", "jetson", "--variant", "original")
    assert res.returncode == 2 and "jetson-orin" in res.stderr


def test_malformed_preset_file(tmp_path, run_cli):
    """A malformed preset is an error for a command that uses it, a warning for the listing."""
    (tmp_path / "broken.toml").write_text('name = "broken"\ndevice = "cpu\n')
    res = run_with(run_cli, "compile", "-t", "broken", "-v", "original",
                   env={"TVMFLOW_TARGET_PATH": str(tmp_path)})
    assert res.returncode == 2
    assert "malformed target preset" in res.stderr and "broken.toml" in res.stderr
    assert "Traceback" not in res.stderr
    res = run_with(run_cli, "targets", env={"TVMFLOW_TARGET_PATH": str(tmp_path)})
    assert res.returncode == 0 and "rpi4" in res.stdout
    assert "Warning: malformed target preset" in res.stderr and "broken.toml" in res.stderr


def test_preset_missing_field(tmp_path, run_cli):
    text = RPI_LIKE.format(name="nokey", cc="aarch64-linux-gnu-g++", mcpu="cortex-a72")
    (tmp_path / "nokey.toml").write_text(text.replace('rpc_key = "nokey"\n', ""))
    res = run_with(run_cli, "compile", "--target", "nokey", "--variant", "original",
                   env={"TVMFLOW_TARGET_PATH": str(tmp_path)})
    assert res.returncode == 2
    assert "nokey.toml: missing field 'rpc_key'" in res.stderr


def test_cross_compiler_not_installed(tmp_path, run_cli):
    (tmp_path / "oddboard.toml").write_text(
        RPI_LIKE.format(name="oddboard", cc="riscv99-nowhere-linux-gnu-g++", mcpu="cortex-a72"))
    res = run_with(run_cli, "compile", "--target", "oddboard", "--variant", "original",
                   "-o", tmp_path / "out" / "x.so", env={"TVMFLOW_TARGET_PATH": str(tmp_path)})
    assert res.returncode == 2
    assert "cross compiler riscv99-nowhere-linux-gnu-g++ for target oddboard is not installed" in res.stderr
    assert "apt-get install g++-riscv99-nowhere-linux-gnu" in res.stderr
    assert not (tmp_path / "out" / "x.so").exists()


@pytest.mark.parametrize("arch", ["sm_9x", "ampere", "90"])
def test_invalid_cuda_arch(run_cli, arch):
    res = run_with(run_cli, "compile", "--target", "cuda", "--variant", "grouped",
                   env={"TVMFLOW_CUDA_ARCH": arch})
    assert res.returncode == 2
    assert f"invalid CUDA arch '{arch}'" in res.stderr and "TVMFLOW_CUDA_ARCH" in res.stderr
    assert "sm_87" in res.stderr  # says what a valid one looks like


def test_cuda_arch_nvcc_cannot_build(run_cli):
    """Well-formed but not supported by this nvcc (CUDA 13 dropped Volta)."""
    res = run_with(run_cli, "compile", "--target", "cuda", "--variant", "grouped",
                   env={"TVMFLOW_CUDA_ARCH": "sm_70"})
    assert res.returncode == 2
    assert "cannot generate code for sm_70" in res.stderr and "sm_87" in res.stderr


def test_nvcc_missing(run_cli, tmp_path):
    res = run_with(run_cli, "compile", "--target", "h100", "--variant", "grouped",
                   env={"TVMFLOW_NVCC": str(tmp_path / "no-nvcc")})
    assert res.returncode == 2
    assert "nvcc not found" in res.stderr and "install the CUDA toolkit" in res.stderr


def test_library_errors_are_tvmflow_errors(tmp_path, monkeypatch):
    (tmp_path / "gpu.toml").write_text(textwrap.dedent("""\
        name = "gpu"
        description = "x"
        device = "cuda"
        rpc_key = "gpu"
        target = { kind = "llvm" }
        """))
    monkeypatch.setenv("TVMFLOW_TARGET_PATH", str(tmp_path))
    with pytest.raises(TvmflowError, match="device 'cuda' needs a target of kind 'cuda'"):
        get_target("gpu")
    with pytest.raises(TvmflowError, match="unknown target"):
        get_target("nonesuch")


def test_preset_record_round_trips():
    """TargetPreset is the target stage's record: to_json and back, detection kept as it was."""
    from tvmflow.target.presets import TargetPreset
    for name in ("host", "rpi4", "h100"):
        p = get_target(name)
        back = TargetPreset.from_json(p.to_json())
        assert back == p and back.cpu_key == p.cpu_key
    with pytest.raises(TvmflowError, match="unknown fields"):
        TargetPreset.from_json({**get_target("rpi4").to_json(), "colour": "red"})
