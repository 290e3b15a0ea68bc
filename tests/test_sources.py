"""Models from anywhere as variants: ONNX files, saved torch.export programs, entry points and
torchvision architectures -- imported, listed, checked against their reference, and their
mistakes reported in one line (issue: your own model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tvmflow.errors import TvmflowError

NETS = textwrap.dedent("""
    import torch
    import torch.nn as nn

    def tiny(width=8, classes=10, act="relu"):
        acts = {"relu": nn.ReLU(), "celu": nn.CELU()}
        return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width),
                             acts[act], nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(width, classes))

    def small(width=24):
        # two convs whose widths halve off multiples of 8 (24 -> 12, 40 -> 20)
        return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                             nn.Conv2d(width, width + 16, 3, padding=1),
                             nn.BatchNorm2d(width + 16), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(width + 16, 10))

    class Erfcx(nn.Module):
        def forward(self, x):
            return torch.special.erfcx(x)

    def erfcx():
        return Erfcx()

    def not_a_module():
        return 42

    def broken():
        raise ValueError("no such width")
""")


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """A package of small models on sys.path, an ONNX file (fixed and dynamic batch) and a
    saved program of ``tiny``, and a workspace models/ of their own."""
    root = tmp_path_factory.mktemp("sources")
    (root / "pkg").mkdir()
    (root / "pkg" / "mynets.py").write_text(NETS)
    sys.path.insert(0, str(root / "pkg"))
    import torch
    import mynets
    torch.manual_seed(0)
    m = mynets.tiny().eval()
    x = torch.randn(1, 3, 32, 32)
    for name, dyn in (("tiny.onnx", None), ("tiny_dyn.onnx", {"x": {0: "batch"}}),
                      ("celu.onnx", None)):
        model = mynets.tiny(act="celu").eval() if name == "celu.onnx" else m
        torch.onnx.export(model, (x,), str(root / name), input_names=["x"], dynamo=False,
                          dynamic_axes=dyn, opset_version=17)
    torch.export.save(torch.export.export(m, (x,)), str(root / "tiny.pt2"))
    yield root
    sys.path.remove(str(root / "pkg"))


@pytest.fixture
def ws(nets, tmp_path, monkeypatch):
    monkeypatch.setenv("TVMFLOW_MODEL_PATH", str(tmp_path / "models"))
    return tmp_path / "models"


def _import(what, name, out, **kw):
    from tvmflow.spec.importing import import_variant
    return import_variant(str(what), name, out_dir=out, **kw)


def test_each_kind_imports_lists_and_matches_its_reference(nets, ws):
    """ONNX, .pt2, an entry point and torchvision: the variant file is written, the registry
    lists it with its params and MACs, and TVM's output matches the reference (PyTorch, or
    ONNX Runtime for the ONNX file) to 1e-4 through each frontend that applies."""
    from tvmflow.ir.verify import verify
    from tvmflow.spec.registry import get_spec, list_models
    _import(nets / "tiny.onnx", "t-onnx", ws)
    _import(nets / "tiny.pt2", "t-pt2", ws)
    _import("entry:mynets:tiny", "t-entry", ws, input_shape="1,3,32,32", kwargs={"width": 16})
    _import("torchvision:resnet18", "r18", ws, input_shape=(1, 3, 32, 32),
            kwargs={"num_classes": 10})
    assert {"t-onnx", "t-pt2", "t-entry", "r18"} <= set(list_models())
    # conv 3->8 3x3 at 32x32 plus a linear 8->10: counted by hand
    tiny = get_spec("t-onnx")
    assert (tiny.macs, tiny.params) == (32 * 32 * 8 * 27 + 80, 8 * 27 + 8 + 80 + 10)
    assert (get_spec("t-pt2").macs, get_spec("t-pt2").params) == (tiny.macs, tiny.params)
    assert get_spec("t-entry").macs == 32 * 32 * 16 * 27 + 160
    r18 = get_spec("r18")
    assert r18.input_shape == (1, 3, 32, 32) and r18.kwargs == {"num_classes": 10}
    assert 11_000_000 < r18.params < 11_300_000 and len(r18.layers()) == 21
    text = (ws / "r18.toml").read_text()
    assert 'model = "torchvision:resnet18"' in text and "num_classes = 10" in text
    res = verify("t-onnx,t-pt2,t-entry", tolerance=1e-4)
    rows = {(r.variant, r.frontend): r for r in res.rows}
    assert set(rows) == {("t-onnx", "onnx"), ("t-pt2", "torch"), ("t-pt2", "onnx"),
                         ("t-entry", "torch"), ("t-entry", "onnx")}
    res.rows += verify("r18", frontends=("torch",), tolerance=1e-4).rows
    assert all(r.passed and r.max_abs_error <= 1e-4 for r in res.rows), res.rows


def test_random_weights_are_the_same_in_every_process(nets, ws):
    """A model without weights of its own gets seeded ones, Linear layers included, so the
    module compiled in one process matches the reference built in another."""
    from tvmflow.spec import torch_models as sources
    from tvmflow.spec.registry import get_spec
    _import("entry:mynets:tiny", "t-seeded", ws, input_shape="1,3,32,32")
    spec = get_spec("t-seeded")
    code = ("import sys, json; sys.path.insert(0, sys.argv[1]); "
            "from tvmflow.spec.registry import get_spec; from tvmflow.spec import torch_models as sources; "
            "m = sources.torch_module(get_spec('t-seeded'), 3); "
            "print(json.dumps(m[5].weight.flatten()[:4].tolist()))")
    env = dict(os.environ, TVMFLOW_MODEL_PATH=str(ws))
    out = subprocess.run([sys.executable, "-c", code, str(nets / "pkg")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    here = sources.torch_module(spec, 3)[5].weight.flatten()[:4].tolist()
    assert np.allclose(json.loads(out.stdout), here)
    assert not np.allclose(sources.torch_module(spec, 4)[5].weight.flatten()[:4].tolist(), here)


def test_bench_of_an_onnx_variant_checks_against_onnx_runtime(nets, ws, tmp_path, monkeypatch):
    """An ONNX variant has no PyTorch module: its module is checked against ONNX Runtime on
    its own file, timed beside ONNX Runtime, and PyTorch eager is left out with the reason."""
    from tvmflow.measure.bench import BenchOptions, bench
    monkeypatch.setenv("TVMFLOW_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    _import(nets / "tiny.onnx", "t-onnx", ws)
    opts = BenchOptions(rounds=2, warmup=1, min_repeats=4, min_time=0, max_time=1)
    report = bench("host", "t-onnx", options=opts, out_dir=tmp_path / "report")
    (r,) = report.results
    assert r.check["ok"] is True and r.check["reference"] == "ONNX Runtime"
    assert r.check["max_abs_err"] <= 1e-4
    assert set(r.latency) == {"tvm", "onnxruntime"}


@pytest.mark.parametrize("what,kw,message", [
    ("tiny_dyn.onnx", {}, "input 'x' has dynamic dim 0 (batch); give the shape to use"),
    ("tiny.onnx", {"input_shape": "1,3,64,64"},
     "input 'x' has shape [1, 3, 32, 32], which [1, 3, 64, 64] does not fit"),
    ("tiny.pt2", {"input_shape": "1,3,64,64"},
     "was exported for input shape [1, 3, 32, 32], not [1, 3, 64, 64]"),
    ("entry:mynets:not_a_module", {"input_shape": "1,3,32,32"},
     "entry point mynets:not_a_module returned int (42), not a torch.nn.Module"),
    ("entry:nosuchpkg.nets:tiny", {"input_shape": "1,3,32,32"},
     "cannot import 'nosuchpkg.nets': ModuleNotFoundError"),
    ("entry:mynets:nosuch", {"input_shape": "1,3,32,32"}, "'mynets' has no function 'nosuch'"),
    ("entry:mynets:broken", {"input_shape": "1,3,32,32"}, "raised ValueError: no such width"),
    ("entry:mynets:tiny", {}, "an entry point declares no input shape: pass --input-shape"),
    ("torchvision:resnet81", {}, "torchvision has no model 'resnet81'; did you mean resnet18"),
    ("torchvision:resnet18", {"input_shape": "1,4,32,32"},
     "input shape [1, 4, 32, 32] does not fit the model: Given groups=1, weight of size"),
    ("torchvision:resnet18", {"input_shape": "1,3,x"},
     "--input-shape: input shape '1,3,x' is not a list of whole numbers"),
    ("torchvision:resnet18", {"kwargs": {"no_such_arg": 1}},
     "torchvision resnet18(no_such_arg=1) failed: ResNet.__init__() got an unexpected"),
    ("model.h5", {}, "model.h5' is: give an .onnx or .pt2 file, or torchvision:NAME"),
    ("missing.onnx", {}, "missing.onnx does not exist"),
])
def test_import_errors(nets, ws, what, kw, message):
    what = str(nets / what) if what.endswith((".onnx", ".pt2", ".h5")) else what
    with pytest.raises(TvmflowError) as info:
        _import(what, "x", ws, **kw)
    assert message in info.value.message, info.value.message
    assert not (ws / "x.toml").exists()


def test_an_operator_tvm_cannot_import_is_named(nets, ws):
    from tvmflow.ir.frontend import import_model
    _import(nets / "celu.onnx", "t-celu", ws)
    with pytest.raises(TvmflowError, match=r"variant 't-celu': TVM's ONNX frontend cannot "
                                           r"import operator\(s\) Celu"):
        import_model("t-celu")
    _import("entry:mynets:erfcx", "t-erfcx", ws, input_shape="1,3,8,8")
    with pytest.raises(TvmflowError, match=r"variant 't-erfcx': TVM's PyTorch frontend cannot "
                                           r"import operator\(s\) \['special_erfcx.default'\]"):
        import_model("t-erfcx")


def test_variant_file_mistakes(ws):
    from tvmflow.spec.registry import get_spec
    ws.mkdir(parents=True, exist_ok=True)
    cases = {
        "scheme": ('model = "keras:net"\ninput_shape = [1, 3, 8, 8]\n',
                   "unknown model scheme 'keras' in 'keras:net'; known: onnx, pt2, entry, torchvision"),
        "noshape": ('model = "torchvision:resnet18"\n', "missing field 'input_shape'"),
        "kwargs": ('model = "onnx:x.onnx"\ninput_shape = [1, 3, 8, 8]\nkwargs = { a = 1 }\n',
                   "'kwargs' apply to entry-point and torchvision models only"),
        "dtype": ('model = "torchvision:resnet18"\ninput_shape = [1, 3, 8, 8]\n'
                  'input_dtype = "int8"\n', "input_dtype 'int8' is not supported"),
        "mixed": ('model = "torchvision:resnet18"\ninput_shape = [1, 3, 8, 8]\n'
                  'channels = [1, 2]\n', "unknown field(s) ['channels'] for a variant with a 'model'"),
    }
    for name, (body, _msg) in cases.items():
        (ws / f"{name}.toml").write_text(f'name = "{name}"\n{body}')
    for name, (_body, msg) in cases.items():
        with pytest.raises(TvmflowError) as info:
            get_spec(name)
        assert msg in info.value.message, (name, info.value.message)


def test_cli_import_and_models(nets, tmp_path, run_cli):
    """The command: a clear one-line error (exit 2), then an import that `models` lists; a
    second import of the name is refused, --force replaces only what import wrote."""
    out = tmp_path / "models"
    bad = run_cli("import", nets / "tiny_dyn.onnx", "--name", "dyn", "-o", out, model_path=out)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [
        f"Error: ONNX file {nets / 'tiny_dyn.onnx'}: input 'x' has dynamic dim 0 (batch); give "
        "the shape to use. Hint: pass --input-shape, e.g. --input-shape 1,3,224,224"]
    ok = run_cli("import", nets / "tiny_dyn.onnx", "--name", "dyn", "--input-shape", "1,3,32,32",
                 "-o", out, model_path=out)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert f"written: {out / 'dyn.toml'}" in ok.stdout
    listed = run_cli("models", "dyn", "--json", model_path=out)
    (row,) = json.loads(listed.stdout)
    assert row["model"] == f"onnx:{nets / 'tiny_dyn.onnx'}" and row["input_shape"] == [1, 3, 32, 32]
    again = run_cli("import", nets / "tiny.onnx", "--name", "dyn", "-o", out, model_path=out)
    assert again.returncode == 2 and "already exists" in again.stderr
    forced = run_cli("import", nets / "tiny.onnx", "--name", "dyn", "-o", out, "--force",
                     model_path=out)
    assert forced.returncode == 0, forced.stderr[-2000:]
    (out / "mine.toml").write_text('name = "mine"\nmodel = "torchvision:resnet18"\n'
                                   'input_shape = [1, 3, 32, 32]\n')
    mine = run_cli("import", nets / "tiny.onnx", "--name", "mine", "-o", out, "--force",
                   model_path=out)
    assert mine.returncode == 2 and "was not written by tvmflow import" in mine.stderr
    kw = run_cli("import", "torchvision:resnet18", "--name", "k", "--kwarg", "num_classes",
                 "-o", out, model_path=out)
    assert kw.returncode == 2 and "'num_classes' is not KEY=VALUE" in kw.stderr


# ------------------------------------------------------------------ Torch-Pruning


@pytest.fixture(scope="module")
def tv_models(tmp_path_factory):
    """resnet18 and mobilenet_v2 at 1x3x32x32, 10 classes, in a models/ of their own."""
    from tvmflow.spec.importing import import_variant
    out = tmp_path_factory.mktemp("tv-models")
    for arch in ("resnet18", "mobilenet_v2"):
        import_variant(f"torchvision:{arch}", arch, input_shape="1,3,32,32",
                       kwargs={"num_classes": 10}, out_dir=out)
    return out


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_torch_pruning_at_each_alignment(tv_models, arch, monkeypatch):
    """Pruned at 0.5 with align 1 and 8: with 8 every pruned conv keeps a multiple of 8
    channels (with 1 some do not), the classifier keeps its 10 outputs, the program is a
    variant, and TVM matches it to 1e-4."""
    from tvmflow.ir.verify import verify
    from tvmflow.spec.registry import get_spec
    from tvmflow.spec.tp_prune import prune_model
    monkeypatch.setenv("TVMFLOW_MODEL_PATH", str(tv_models))
    odd = {}
    for align in (1, 8):
        r = prune_model(arch, 0.5, align, out_dir=tv_models)
        assert r.name == f"{arch}-p50" + ("-a8" if align == 8 else "")
        pruned = [c for c in r.convs if c["after"] < c["before"]]
        assert pruned and r.params_after < r.params_before / 2 and r.macs_after < r.macs_before
        odd[align] = [c for c in pruned if c["after"] % 8]
        spec = get_spec(r.name)
        assert spec.scheme == "pt2" and spec.base == arch and spec.prune["align"] == align
        assert spec.layers()[-1]["cout"] == 10
        assert all(row["cout"] % 8 == 0 for row in spec.layers()[:-1]) or align == 1
        res = verify(r.name, frontends=("torch",), tolerance=1e-4)
        assert all(row.passed for row in res.rows), res.rows
    assert odd[8] == []
    if arch == "mobilenet_v2":                       # 24 -> 12 unaligned, 16 aligned
        assert odd[1], "align 1 left every channel count a multiple of 8 already"


def test_torch_pruning_refuses_what_it_cannot_prune(tv_models, monkeypatch):
    from tvmflow.spec.tp_prune import prune_model
    monkeypatch.setenv("TVMFLOW_MODEL_PATH", str(tv_models))
    with pytest.raises(TvmflowError, match="variant 'pruned' is a NIN variant; Torch-Pruning"):
        prune_model("pruned", 0.5)
    with pytest.raises(TvmflowError, match="ratio must be strictly between 0 and 1"):
        prune_model("resnet18", 1.5)
    with pytest.raises(TvmflowError, match="unknown importance 'taylor'"):
        prune_model("resnet18", 0.5, importance="taylor")


def test_create_model_builds_any_torch_variant(nets, ws):
    import torch
    import tvmflow
    _import("entry:mynets:tiny", "t-create", ws, input_shape="1,3,32,32")
    _import(nets / "tiny.onnx", "t-create-onnx", ws)
    model = tvmflow.create_model("t-create", seed=5)
    assert isinstance(model, torch.nn.Module) and model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(TvmflowError, match="is an ONNX file: it has no PyTorch module"):
        tvmflow.create_model("t-create-onnx")


def test_sweep_of_a_model_prunes_it_once_per_alignment(nets, ws, tmp_path):
    """`sweep --from MODEL --ratio R --align ...`: Torch-Pruning once per N (round_to N), the
    variants written as `prune -v` names them, measured side by side; a second sweep reuses
    them; a variant of that name pruned otherwise is an error."""
    from tvmflow.experiments.sweep import sweep
    from tvmflow.experiments.sweep_models import plan as plan_sweep
    from tvmflow.spec.registry import get_spec
    _import("entry:mynets:small", "t-small", ws, input_shape="1,3,16,16")
    out = tmp_path / "out"
    r = sweep("t-small", "1,2,8", ratio=0.5, trials=0, rounds=2, repeat=2, out_dir=out,
              models_dir=ws)
    by = {row.align: row for row in r.rows}
    assert [by[n].variant for n in (1, 2, 8)] == ["t-small-p50", "t-small-p50", "t-small-p50-a8"]
    assert by[2].reused == "sweep" and by[1].reused is None     # 12 and 20 are even already
    assert by[1].channels == [12, 20] and by[8].channels == [8, 16]   # round_to 8 rounds down
    assert by[8].macs < by[1].macs and r.base == "t-small"
    for name, n in (("t-small-p50", 1), ("t-small-p50-a8", 8)):
        spec = get_spec(name)
        assert (ws / f"{name}.pt2").is_file() and spec.scheme == "pt2" and spec.base == "t-small"
        assert spec.prune["align"] == n and spec.prune["engine"] == "torch-pruning"
    assert all(len(row.samples_ms) == 4 and row.p50_ms > 0 for row in r.rows)
    data = json.loads((out / "sweep.json").read_text())
    assert [row["variant"] for row in data["rows"]] == [by[n].variant for n in (1, 2, 8)]
    assert (out / "sweep.png").stat().st_size > 0 and (out / "sweep.csv").is_file()
    again = plan_sweep("t-small", "1,8", ratio=0.5, models_dir=ws)
    assert [v.reused for v in again.variants] == ["existing", "existing"]
    assert again.variants[1].channels == [8, 16]
    with pytest.raises(TvmflowError, match="variant 't-small-p50' already exists .* and is not "
                                           "t-small pruned 0.3 at align 1"):
        plan_sweep("t-small", "1", ratio=0.3, name="t-small-p50", models_dir=ws, write=False)


def test_sweep_of_a_model_refuses_what_it_cannot_do(nets, ws):
    from tvmflow.experiments.sweep_models import plan as plan_sweep
    from tvmflow.experiments.sweep_plan import plan_sweep as plan_nin
    _import("entry:mynets:small", "t-small-e", ws, input_shape="1,3,16,16")
    _import(nets / "tiny.onnx", "t-onnx-s", ws)
    cases = [(("t-small-e", "1,8"), {}, "a sweep of 't-small-e' prunes it once per alignment: "
                                        "give the pruning ratio"),
             (("pruned", "1,8"), {"ratio": 0.5}, "--ratio prunes a PyTorch model; 'pruned' is a NIN"),
             (("t-small-e", "1"), {"ratio": 0.5, "base": "original"}, "--base names the unpruned NIN"),
             (("t-small-e", "1"), {"ratio": 1.0}, "ratio must be strictly between 0 and 1"),
             (("t-small-e", "1"), {"ratio": 0.5, "importance": "taylor"}, "unknown importance"),
             (("t-onnx-s", "1"), {"ratio": 0.5}, "variant 't-onnx-s' is an ONNX model; "
                                                 "Torch-Pruning prunes torchvision")]
    for args, kw, message in cases:
        with pytest.raises(TvmflowError, match=message):
            plan_sweep(*args, write=False, models_dir=ws, **kw)
    with pytest.raises(TvmflowError,
                       match=r"'t-small-e' is a model of its own \(entry\), not a NIN variant"):
        plan_nin("t-small-e", "1", write=False, models_dir=ws)