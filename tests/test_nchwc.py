"""The NCHWc layout option: block from the target, zero-padded channels, results unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tvmflow.adapter import pipeline as P
from tvmflow.errors import TvmflowError

FIVE = ["original", "grouped", "grouped-wide", "pruned", "pruned-a8"]
TOL = 1e-4


def _target(**kw):
    from tvmflow.adapter.target import make_target
    return make_target({"kind": "llvm", "num-cores": 2, **kw})


def _host():
    from tvmflow.target.presets import get_target
    return get_target("host").tvm_target()


def _run(mod, target, options):
    """Build untuned through the shared pipeline and run once on the host CPU."""
    from tvmflow.adapter.runtime import local_session
    ex, _cov = P.build(mod, target, None, options=options)
    return local_session().load(ex)


def _output(loaded, x):
    return loaded.infer(x)


@pytest.mark.parametrize("mcpu,block", [("znver2", 8), ("haswell", 8), ("znver4", 16),
                                        ("emeraldrapids", 16), ("x86-64-v4", 16)])
def test_block_is_the_vector_width(mcpu, block):
    opts = P.PipelineOptions(layout="NCHWc").resolved(_target(mcpu=mcpu))
    assert opts.block == block
    assert opts.to_json()["block"] == block   # what a tuning log records


def test_block_for_neon_and_refused_for_cuda():
    arm = _target(mtriple="aarch64-linux-gnu", mcpu="cortex-a72", mattr=["+neon"])
    assert P.PipelineOptions(layout="NCHWc").resolved(arm).block == 4
    from tvmflow.adapter.target import make_target
    cuda = make_target({"kind": "cuda", "arch": "sm_90", "max_threads_per_block": 1024,
                        "max_shared_memory_per_block": 49152, "thread_warp_size": 32})
    with pytest.raises(TvmflowError, match="CPU"):
        P.PipelineOptions(layout="NCHWc").resolved(cuda)


def test_options_round_trip_and_bad_values():
    opts = P.PipelineOptions(layout="NCHWc", block=16, pad_channels=False)
    assert P.PipelineOptions.from_json(opts.to_json()) == opts
    assert P.PipelineOptions.from_json({"prepack": True, "fold_bn": True, "layout": "NCHW"}) \
        == P.PipelineOptions()  # logs written before the option existed
    with pytest.raises(TvmflowError, match="unknown layout"):
        P.PipelineOptions(layout="NCHW4c")
    with pytest.raises(TvmflowError, match="block"):
        P.PipelineOptions(layout="NCHW", block=8)


@pytest.fixture(scope="module")
def models():
    from tvmflow.ir.frontend import import_model
    return {v: import_model(v) for v in FIVE}


@pytest.mark.parametrize("variant", FIVE)
def test_every_variant_matches_pytorch_with_the_layout_on(models, variant):
    m = models[variant]
    x = m.example_input()
    ref = m.reference(x)
    vm = _run(m.mod, _host(), P.PipelineOptions(layout="NCHWc"))
    out = _output(vm, x)
    assert out.shape == ref.shape
    assert float(np.abs(out - ref).max()) <= TOL


def test_pruned_runs_blocked_after_padding(models):
    """pruned's odd channels (47, 93, ...) are padded up to the block, so every conv but the
    first (3 input channels) runs in NCHW8c; only two activation transforms remain: after
    the first conv and before the flatten at the end; without padding none converts."""
    tgt = _target(mcpu="znver2")
    padded = P.layout_summary(models["pruned"].mod, tgt, P.PipelineOptions(layout="NCHWc"))
    assert padded["convs"] == {"NCHW": 1, "NCHW8c": 8}
    for layout, cin, cout, _g in padded["conv_channels"][1:]:
        assert layout == "NCHW8c" and cin % 8 == 0 and cout % 8 == 0
    assert [c[2] for c in padded["conv_channels"]] == [48, 96, 48, 128, 120, 96, 112, 88, 16]
    assert padded["data_transforms"] == 2
    plain = P.layout_summary(models["pruned"].mod, tgt,
                             P.PipelineOptions(layout="NCHWc", pad_channels=False))
    assert plain["convs"] == {"NCHW": 9}


def test_group_convs_with_odd_group_widths_stay_nchw(models):
    """As in ONNX Runtime: a group conv is blocked only when the channels of each group are
    a multiple of the block (grouped: g2 over 192/160 yes; g16 over 96 -> 6 per group, no)."""
    s = P.layout_summary(models["grouped"].mod, _target(mcpu="znver2"),
                         P.PipelineOptions(layout="NCHWc"))
    by_groups = {(cin, cout, g): layout for layout, cin, cout, g in s["conv_channels"]}
    assert by_groups[(192, 160, 2)] == "NCHW8c"
    assert by_groups[(96, 192, 16)] == "NCHW"
    assert by_groups[(192, 192, 32)] == "NCHW"


def test_pools_run_blocked_and_weights_are_prepacked(models):
    """The pools take the blocked layout (5-D buffers, last axis the block), and only the
    two activation transforms are left in main: the weights' transforms fold at compile
    time (prepacked into OIHW8i8o constants)."""
    from tvm import relax
    tgt = _target(mcpu="znver2")
    mod = P.prepare(models["original"].mod, tgt, P.PipelineOptions(layout="NCHWc"))
    pools = [f for gv, f in mod.functions.items()
             if "pool2d" in gv.name_hint and not isinstance(f, relax.Function)]
    assert len(pools) >= 2
    import re
    shapes = [tuple(int(d) for d in re.findall(r"T\.int64\((\d+)\)", dims)) for f in pools
              for dims in re.findall(r"T\.Buffer\(\(((?:T\.int64\(\d+\),?\s*)+)\)", f.script())]
    assert all(len(s) == 5 and s[-1] == 8 for s in shapes), shapes
    transforms = [gv.name_hint for gv in mod.functions if "layout_transform" in gv.name_hint]
    assert len(transforms) == 2, transforms
    assert P.layout_summary(models["original"].mod, tgt,
                            P.PipelineOptions(layout="NCHWc"))["data_transforms"] == 2


@pytest.mark.parametrize("mcpu,block", [("znver2", 8), ("emeraldrapids", 16)])
def test_the_default_layout_is_nchwc_where_it_runs_end_to_end(models, mcpu, block):
    """A model gets NCHWc (fixed rule, blocked stem) by default on x86 when all its convs
    block and the layout changes only at the input and the output (channel shuffles run
    blocked); grouped's narrow group convs (6 channels per group) keep it in NCHW; ARM keeps
    NCHW."""
    tgt = _target(mcpu=mcpu)
    fits = {v: P.nchwc_fits(tgt, m.mod) for v, m in models.items()}
    assert fits == {"original": True, "grouped": False, "grouped-wide": True,
                    "pruned": True, "pruned-a8": True}
    opts = P.default_options(tgt, models["pruned"].mod)
    assert (opts.layout, opts.block, opts.conv_rule, opts.blocked_stem) == \
        ("NCHWc", block, "fixed", True)
    assert P.default_options(tgt, models["grouped"].mod).layout == "NCHW"
    assert P.default_options(tgt).layout == "NCHW"  # no model to judge by
    stem = P.layout_summary(models["pruned"].mod, tgt, opts)
    assert stem["convs"] == {"NCHW3c": 1, f"NCHW{block}c": 8}
    arm = _target(mtriple="aarch64-linux-gnu", mcpu="cortex-a72", mattr=["+neon"])
    assert not P.nchwc_fits(arm, models["pruned"].mod)
    assert P.default_options(arm, models["pruned"].mod).layout == "NCHW"


def test_channel_shuffles_run_blocked(models):
    """grouped-wide's six shuffles: gathers in NCHW16c (with the blocked shuffle), not two
    transforms each; the result is unchanged."""
    m = models["grouped-wide"]
    tgt = _host()
    on = P.options_for(tgt, "NCHWc")
    assert on.blocked_shuffle
    assert P.layout_summary(m.mod, tgt, on)["data_transforms"] == 2
    from dataclasses import replace
    off = replace(on, blocked_shuffle=False)
    assert P.layout_summary(m.mod, tgt, off)["data_transforms"] == 2 + 2 * 6
    prepared = P.prepare(m.mod, tgt, on)
    shuffles = [gv.name_hint for gv in prepared.functions if "channel_shuffle" in gv.name_hint]
    assert len(shuffles) == 6, shuffles
    x = m.example_input()
    out = _output(_run(m.mod, tgt, on), x)
    assert float(np.abs(out - m.reference(x)).max()) <= TOL


class _Residual(nn.Module):
    """Odd channels, a residual add, a depthwise conv and a padded tensor returned directly."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 13, 3, padding=1)
        self.b = nn.Conv2d(13, 13, 3, padding=1)
        self.dw = nn.Conv2d(13, 13, 3, padding=1, groups=13)
        self.c = nn.Conv2d(13, 21, 1)
        self.bn = nn.BatchNorm2d(21)

    def forward(self, x):
        y = torch.relu(self.a(x))
        y = torch.relu(self.b(y) + y)
        y = torch.relu(self.dw(y))
        return torch.relu(self.bn(self.c(y)))


def test_padding_is_exact_on_residuals_depthwise_and_returned_tensors():
    from tvmflow.adapter.frontend import from_torch
    torch.manual_seed(0)
    model = _Residual().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(1, 3, 16, 16)
    mod = from_torch(model, x)
    tgt = _host()
    opts = P.PipelineOptions(layout="NCHWc", block=8)
    s = P.layout_summary(mod, _target(mcpu="znver2"), opts)
    assert [c[2] for c in s["conv_channels"]] == [16, 16, 16, 24]
    # the first conv (3 inputs) and the depthwise one (1 channel per group) stay NCHW
    assert [c[0] for c in s["conv_channels"]] == ["NCHW", "NCHW8c", "NCHW", "NCHW8c"]
    out = _output(_run(mod, tgt, opts), x.numpy())
    with torch.no_grad():
        ref = model(x).numpy()
    assert out.shape == ref.shape == (1, 21, 16, 16)
    assert float(np.abs(out - ref).max()) <= TOL


def test_tune_cli_layout_options(run_cli, tmp_path, monkeypatch):
    """`tune --layout NCHWc --no-pad` records the layout, the block, the padding and the conv
    rule (the fixed one unless --conv-rule search) in meta.json, and compile applies the log through the same pipeline (its tasks tuned);
    `--no-pad` alone is a clear error."""
    bad = run_cli("tune", "-v", "pruned", "--no-pad")
    assert bad.returncode == 2 and bad.stderr.startswith("Error: --no-pad needs --layout NCHWc")
    assert "Traceback" not in bad.stderr
    monkeypatch.setenv("TVMFLOW_SCHEDULES", str(tmp_path))
    out = run_cli("tune", "-v", "pruned", "--layout", "NCHWc", "--no-pad", "--trials", 8,
                  "--per-round", 8, "--json", timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    from tvmflow.tuning import schedules as S
    meta = S.read_meta(S.schedule_dir("host", "pruned", tmp_path))
    block = P.PipelineOptions(layout="NCHWc").resolved(_host()).block
    assert meta["pipeline"] == {"prepack": True, "fold_bn": True, "layout": "NCHWc",
                                "block": block, "pad_channels": False, "conv_rule": "fixed",
                                "blocked_stem": True, "blocked_shuffle": True}
    # a resumed tune with another layout is refused rather than mixing workloads
    again = run_cli("tune", "-v", "pruned", "--layout", "NCHW", "--trials", 16)
    assert again.returncode == 2 and "was tuned with pipeline" in again.stderr
