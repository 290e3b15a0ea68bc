"""Issue 2, point 4: both import paths, compiled for the host, equal PyTorch to 1e-4."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tvmflow.spec.registry import get_spec

FIVE = ["original", "grouped", "grouped-wide", "pruned", "pruned-a8"]


def tvmflow(*args, **kw):
    return subprocess.run([sys.executable, "-m", "tvmflow", *args], capture_output=True,
                          text=True, **kw)


@pytest.fixture(scope="module")
def verify_all():
    proc = tvmflow("verify", "--variant", "all", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_verify_all_variants_both_frontends(verify_all):
    rows = {(r["variant"], r["frontend"]): r for r in verify_all["rows"]}
    assert set(rows) == {(v, f) for v in FIVE for f in ("torch", "onnx")}
    for row in rows.values():
        assert 0 <= row["max_abs_error"] <= 1e-4, row
        assert row["passed"]
    assert verify_all["passed"] and verify_all["tolerance"] == 1e-4
    # checked with the pipeline compile uses by default for each model on this CPU
    from tvmflow.adapter.pipeline import default_options
    from tvmflow.ir.frontend import import_model
    from tvmflow.target.presets import get_target
    tgt = get_target("host").tvm_target()
    want = {default_options(tgt, import_model(v).mod).label for v in FIVE}
    assert set(verify_all["pipeline"].split("; ")) == want
    assert len(want) == 2  # NCHWc for the plain convs, NCHW for the grouped variants


def test_verify_with_the_nchwc_layout_on():
    """`verify --layout NCHWc`: both frontends through the blocked layout, padded channels."""
    proc = tvmflow("verify", "--variant", "pruned", "--layout", "NCHWc", "--json")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["pipeline"].startswith(("NCHW8c, padded", "NCHW16c, padded"))
    assert {r["frontend"] for r in res["rows"]} == {"torch", "onnx"}
    assert all(r["passed"] and r["max_abs_error"] <= 1e-4 for r in res["rows"])


def test_verify_can_fail():
    """With an impossible tolerance the same comparison fails: the check is real."""
    from tvmflow.ir.verify import verify
    result = verify("pruned", ("torch",), tolerance=0.0)
    assert not result.passed and result.rows[0].max_abs_error > 0


def test_verify_cli_reports_failure_with_exit_code():
    proc = tvmflow("verify", "--variant", "grouped", "--frontend", "torch", "--tolerance", "0")
    assert proc.returncode == 2
    assert proc.stderr.startswith("Error: TVM output differs from PyTorch by more than 0: grouped/torch")
    assert "Traceback" not in proc.stderr


def test_verify_unknown_variant_suggests():
    proc = tvmflow("verify", "--variant", "prunned")
    assert proc.returncode == 2
    assert "unknown variant 'prunned'; did you mean pruned" in proc.stderr


def test_bn_statistics_matter():
    """Randomised BN statistics change the output: BN in inference mode is exercised."""
    from tvmflow.ir.frontend import torch_model_for
    from tvmflow.spec.nin import example_input
    spec = get_spec("pruned")
    model = torch_model_for(spec, seed=0)
    x = example_input(spec, 0)
    with torch.no_grad():
        ref = model(x)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
        plain = model(x)
    assert not torch.allclose(ref, plain, atol=1e-3)


def test_user_onnx_file_imports(tmp_path):
    """A user with only an ONNX file gets a Relax module through import_onnx_file."""
    from tvmflow.adapter.build import build
    from tvmflow.adapter.frontend import export_onnx
    from tvmflow.adapter.runtime import local_session
    from tvmflow.ir.frontend import import_onnx_file, torch_model_for
    from tvmflow.spec.nin import example_input
    from tvmflow.target.presets import get_target
    spec = get_spec("grouped")
    model = torch_model_for(spec, seed=3)
    x = example_input(spec, 3)
    path = export_onnx(model, x, tmp_path / "user.onnx")
    mod = import_onnx_file(path)
    out = local_session().load(build(mod, get_target("host").tvm_target())).infer(x.numpy())
    with torch.no_grad():
        assert np.abs(out - model(x).numpy()).max() <= 1e-4


def test_missing_onnx_file_is_a_clear_error(tmp_path):
    from tvmflow.errors import TvmflowError
    from tvmflow.ir.frontend import import_onnx_file
    with pytest.raises(TvmflowError, match="does not exist"):
        import_onnx_file(tmp_path / "nope.onnx")
