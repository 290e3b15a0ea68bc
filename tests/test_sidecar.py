"""The Sidecar record, old sidecars, and nothing lost: tvmflow.files, compile's and run's
refusal to overwrite files tvmflow did not write, and no writing into the shipped data.

No compile here (the refusals come before the slow part); a fake ``.so`` with a sidecar whose
sha256 matches it stands for a module.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from tvmflow.errors import TvmflowError

SHA = hashlib.sha256(b"not really a module").hexdigest()


def format1(sha: str = SHA) -> dict:
    """A sidecar as the format-1 compile wrote it (keys and layout of that code)."""
    return {
        "format": 1, "created": "2026-11-30T10:00:00Z",
        "variant": {"name": "pruned-a8", "cfg": {"channels": [8]}},
        "weights": {"kind": "random", "seed": 0}, "frontend": "torch",
        "target": {"name": "rpi4", "description": "Raspberry Pi 4", "device": "cpu",
                   "rpc_key": "rpi4", "target": {"kind": "llvm", "mtriple": "aarch64-linux-gnu",
                                                 "mcpu": "cortex-a72"},
                   "host": None, "cross_compiler": "aarch64-linux-gnu-g++",
                   "cross_package": "g++-aarch64-linux-gnu", "emulated": False, "detected": {},
                   "cpu_key": "cortex-a72", "source": "targets/rpi4.toml"},
        "cross_compiler": "/usr/bin/aarch64-linux-gnu-g++",
        "input": {"name": "x", "shape": [1, 3, 32, 32], "dtype": "float32", "seed": 0},
        "versions": {"tvmflow": "0.1", "tvm": "0.27", "tvm_ffi": "0.1", "torch": "2.9",
                     "python": "3.12"},
        "schedules": {"path": "/s/rpi4/cortex-a72/pruned-a8", "sha256": "ab" * 32, "trials": 448,
                      "records": 448, "cpu": "cortex-a72", "running_on": "cortex-a72",
                      "match": "exact", "target": {"kind": "llvm"}, "tvm_version": "0.27"},
        "coverage": {"tasks": 18, "tuned": 18, "default": 0, "task_names": ["a"],
                     "tuned_names": ["a"], "fixed": [], "pipeline": {"layout": "NCHW"}},
        "module": {"file": "m.so", "sha256": sha, "bytes": 19, "build_seconds": 3.2},
    }


def format2() -> dict:
    side = format1()
    side["format"] = 2
    side["build"] = {"linker": "/usr/bin/g++", "linker_version": "g++ 13", "reproducible": True}
    side["cuda"] = {"code": "cubin", "archs": ["sm_90"], "nvcc": "/usr/bin/nvcc",
                    "nvcc_version": "12.8", "cuda_graph": True, "cubin_bytes": 100,
                    "embedded": {"cubin": ["sm_90"], "ptx": [], "source": []}}
    return side


def module(tmp_path: Path, side: dict, name: str = "m.so") -> Path:
    so = tmp_path / name
    so.write_bytes(b"not really a module")
    so.with_suffix(".json").write_text(json.dumps(side))
    return so


# ------------------------------------------------------------------ the record


def test_sidecar_round_trips_through_json():
    from tvmflow.artifact.sidecar import CudaPart, SchedulesPart, Sidecar
    for side in (format1(), format2()):
        rec = Sidecar.from_json(side)
        assert rec.to_json() == side
        assert Sidecar.loads(rec.dumps()) == rec
    rec = Sidecar.from_json(format2())
    assert isinstance(rec.schedules, SchedulesPart) and rec.schedules.trials == 448
    assert rec.schedules.extra == {"target": {"kind": "llvm"}, "tvm_version": "0.27"}
    assert isinstance(rec.cuda, CudaPart) and rec.cuda.cuda_graph and rec.cuda.archs == ["sm_90"]
    assert rec.coverage.summary() == {"tasks": 18, "tuned": 18, "default": 0, "fixed": [],
                                      "pipeline": {"layout": "NCHW"}}
    assert rec.target.cpu_triple == "aarch64-linux-gnu" and rec.build.reproducible


def test_package_properties_read_the_record(tmp_path):
    from tvmflow.artifact.package import Package
    pkg = Package.load(module(tmp_path, format2()))
    assert (pkg.variant, pkg.target_name, pkg.device, pkg.sha256, pkg.seed) == \
        ("pruned-a8", "rpi4", "cpu", SHA, 0)
    assert (pkg.input_shape, pkg.input_dtype, pkg.cpu_triple) == \
        ((1, 3, 32, 32), "float32", "aarch64-linux-gnu")
    assert pkg.cuda.archs == ["sm_90"] and pkg.cuda_graph is True
    assert pkg.summary()["coverage"]["tuned"] == 18 and pkg.summary()["cuda"]["code"] == "cubin"


def test_format1_sidecar_loads_and_is_stale(tmp_path):
    """An old sidecar still loads (run works), and a compile or bench calls it stale."""
    from tvmflow.artifact.compile import stale_reason
    from tvmflow.artifact.package import Package
    so = module(tmp_path, format1())
    pkg = Package.load(so)
    assert pkg.sidecar.format == 1 and pkg.sidecar.build is None and pkg.seed == 0
    assert stale_reason(so) == "its sidecar is format 1, this tvmflow writes 2"


@pytest.mark.parametrize("change,message", [
    (lambda s: s.update(format=3), "sidecar format 3; this tvmflow reads formats 1, 2"),
    (lambda s: s.pop("module"), "missing key 'module'"),
    (lambda s: s.update(input="x"), "InputPart is not a JSON object"),
    (lambda s: s["input"].pop("shape"), "InputPart"),
    (lambda s: s["module"].update(sha256=7), "module.sha256 must be a string"),
    (lambda s: s.update(surprise=1), "unknown key 'surprise'"),
    (lambda s: s["weights"].update(colour="red"), "WeightsPart: unknown keys ['colour']"),
])
def test_bad_sidecars_are_one_clear_error(tmp_path, change, message):
    from tvmflow.artifact.package import Package
    side = format2()
    change(side)
    so = module(tmp_path, side)
    with pytest.raises(TvmflowError, match="is unreadable") as exc:
        Package.load(so)
    assert message in str(exc.value) and "\n" not in str(exc.value)


# ------------------------------------------------------------------ files


def test_write_atomic_and_its_guards(tmp_path):
    from tvmflow.files import atomic_path, check_overwrite, move_aside, write_atomic
    from tvmflow.workspace import shipped_dir
    f = tmp_path / "a.txt"
    write_atomic(f, b"one")
    with pytest.raises(RuntimeError):
        with atomic_path(f) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("died")
    assert f.read_bytes() == b"one" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    evil = shipped_dir("models") / "evil.toml"
    try:
        with pytest.raises(TvmflowError, match="shipped with tvmflow, which is read-only"):
            write_atomic(evil, b"x")
        assert not evil.exists()
    finally:
        evil.unlink(missing_ok=True)        # when the guard is broken, leave the checkout clean
    with pytest.raises(TvmflowError, match=r"a.txt already exists and they differ; not overwriting"):
        check_overwrite(f, ours=False, force=False, why="they differ")
    check_overwrite(f, ours=True, force=False)
    check_overwrite(f, ours=False, force=True)
    check_overwrite(tmp_path / "new", ours=False, force=False)
    old = move_aside(f)
    assert not f.exists() and old.read_bytes() == b"one" and old.name.startswith("a.txt.old-")


def test_ownership_of_a_module_path(tmp_path):
    from tvmflow.artifact.package import owned_by_tvmflow
    so = module(tmp_path, format2())
    assert owned_by_tvmflow(so) == (True, "")
    so.write_bytes(b"changed by someone")
    assert not owned_by_tvmflow(so)[0] and "changed since" in owned_by_tvmflow(so)[1]
    so.unlink()                                        # only tvmflow's sidecar left: ours
    assert owned_by_tvmflow(so)[0]
    so.with_suffix(".json").write_text('{"name": "my model config"}')
    assert owned_by_tvmflow(so) == (False, "m.json is not a tvmflow sidecar")
    so.with_suffix(".json").unlink()
    so.write_bytes(b"\x7fELF a user's own library")
    assert not owned_by_tvmflow(so)[0] and "has no sidecar" in owned_by_tvmflow(so)[1]
    assert owned_by_tvmflow(tmp_path / "nothing.so") == (True, "")


def test_compile_refuses_to_overwrite_what_tvmflow_did_not_write(run_cli, tmp_path):
    """`compile -o ow/model.so` over a user's model.so and model.json: exit 2, both kept;
    and never into the shipped data (both refused before any build)."""
    ow = tmp_path / "ow"
    ow.mkdir()
    (ow / "model.so").write_bytes(b"\x7fELF mine")
    (ow / "model.json").write_text('{"mine": true}')
    res = run_cli("compile", "-t", "rpi4", "-v", "pruned-a8", "-o", ow / "model.so")
    assert res.returncode == 2, res.stderr
    assert "already exists and model.json is not a tvmflow sidecar; not overwriting" in res.stderr
    assert "--force" in res.stderr and "Traceback" not in res.stderr
    assert (ow / "model.so").read_bytes() == b"\x7fELF mine"
    assert (ow / "model.json").read_text() == '{"mine": true}'
    (ow / "model.json").unlink()                         # a .so alone is not tvmflow's either
    res = run_cli("compile", "-t", "rpi4", "-v", "pruned-a8", "-o", ow / "model.so")
    assert res.returncode == 2 and "has no sidecar model.json" in res.stderr
    from tvmflow.workspace import shipped_dir
    res = run_cli("compile", "-t", "rpi4", "-v", "pruned-a8", "-o",
                  shipped_dir("models") / "x.so")
    assert res.returncode == 2 and "read-only" in res.stderr
    assert not (shipped_dir("models") / "x.so").exists()
    assert not (shipped_dir("models") / "x.json").exists()


def test_run_refuses_to_overwrite_an_existing_output(run_cli, tmp_path):
    so = module(tmp_path, format2())
    out = tmp_path / "existing.npy"
    np.save(out, np.arange(3))
    before = out.read_bytes()
    res = run_cli("run", "--module", so, "-o", out)
    assert res.returncode == 2
    assert f"output {out} already exists; not overwriting it" in res.stderr
    assert out.read_bytes() == before
