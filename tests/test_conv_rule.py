"""The fixed NeoCPU-style rule for NCHWc convs: shapes of its register tile, what it schedules
(and that tuning then skips those functions), and results unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tvmflow.adapter import conv_rule as R
from tvmflow.adapter import pipeline as P
from tvmflow.errors import TvmflowError

TOL = 1e-4


def _host():
    from tvmflow.target.presets import get_target
    return get_target("host").tvm_target()


@pytest.mark.parametrize("ow,occ,lanes,tile", [
    (32, 6, 16, (4, 6)),     # 4 columns x 6 output chunks = 24 accumulators, 10 loads
    (16, 8, 16, (4, 4)),     # not 16 x 1: 17 loads for 16 FMAs
    (8, 7, 16, (4, 7)),      # 28 accumulators: the most AVX-512 leaves room for
    (32, 3, 16, (8, 3)),     # few output chunks: more columns make up for them
    (8, 12, 8, (4, 3)),      # AVX2: 12 accumulators
    (7, 5, 16, (7, 1)),      # prime widths and chunk counts still tile
    (1, 4, 4, (1, 4)),
])
def test_register_tile_fits_the_register_file(ow, occ, lanes, tile):
    xi, oci = R.register_tile(ow, occ, lanes)
    assert (xi, oci) == tile
    assert ow % xi == 0 and occ % oci == 0 and xi * oci <= R.accumulators(lanes)


def test_register_tile_has_the_fewest_loads_per_fma():
    """Among all tiles that fit, none needs fewer loads (weights + broadcasts) per FMA."""
    for ow in (1, 7, 8, 14, 16, 28, 32):
        for occ in (1, 2, 3, 5, 6, 8, 12):
            for lanes in (4, 8, 16):
                xi, oci = R.register_tile(ow, occ, lanes)
                cap = R.accumulators(lanes)
                cost = 1 / xi + 1 / oci
                for a in range(1, ow + 1):
                    for b in range(1, occ + 1):
                        if ow % a == 0 and occ % b == 0 and a * b <= cap:
                            assert cost <= 1 / a + 1 / b + 1e-12, (ow, occ, lanes, a, b)


def test_fixed_rule_needs_nchwc():
    with pytest.raises(TvmflowError, match="needs layout NCHWc"):
        P.PipelineOptions(conv_rule="fixed")
    with pytest.raises(TvmflowError, match="unknown conv rule"):
        P.PipelineOptions(layout="NCHWc", conv_rule="winograd")
    opts = P.PipelineOptions(layout="NCHWc", block=16, conv_rule="fixed")
    assert P.PipelineOptions.from_json(opts.to_json()) == opts
    assert "fixed conv rule" in opts.label


def test_nchwc_builds_get_the_fixed_rule_unless_told():
    """A new NCHWc build or tune (CLI, verify) takes the fixed rule; a log written before the
    option existed reads back as searched, which is how it was tuned."""
    tgt = _host()
    assert P.options_for(tgt, "NCHWc").conv_rule == "fixed"
    assert P.options_for(tgt, "NCHWc", conv_rule="search").conv_rule == "search"
    assert P.options_for(tgt, "NCHW").conv_rule == "search"
    assert P.PipelineOptions.from_json({"layout": "NCHWc", "block": 16}).conv_rule == "search"
    with pytest.raises(TvmflowError, match="needs layout NCHWc"):
        P.options_for(tgt, "NCHW", conv_rule="fixed")


class _Net(nn.Module):
    """Blocked convs of every kind the rule meets: 3x3 padded, strided, 1x1, two groups of
    whole chunks, and one with no epilogue (the function's result)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 32, 3, padding=1)
        self.b = nn.Conv2d(32, 48, 3, padding=1)
        self.c = nn.Conv2d(48, 32, 1, stride=2)
        self.d = nn.Conv2d(32, 64, 1, groups=2)
        self.e = nn.Conv2d(64, 16, 3, padding=1, bias=False)

    def forward(self, x):
        y = torch.relu(self.a(x))
        y = torch.relu(self.b(y))
        y = torch.relu(self.c(y))
        y = torch.relu(self.d(y))
        return self.e(y)


@pytest.fixture(scope="module")
def net():
    from tvmflow.adapter.frontend import from_torch
    torch.manual_seed(0)
    model = _Net().eval()
    x = torch.randn(1, 3, 16, 16)
    return model, x, from_torch(model, x)


def test_rule_schedules_the_blocked_convs_and_tuning_skips_them(net):
    _model, _x, mod = net
    tgt = _host()
    opts = P.PipelineOptions(layout="NCHWc", block=16, conv_rule="fixed")
    prepared = P.prepare(mod, tgt, opts)
    fixed = P.fixed_functions(prepared)
    # every conv but the first (3 input channels, left in NCHW) is blocked and fixed
    assert len(fixed) == 4, fixed
    for name in fixed:
        text = prepared[name].script()
        assert "T.parallel" in text, name
        # the conv's own innermost loop is the output-lane vector, inside the unrolled tile
        before = text[:text.index('T.sblock("conv2d_NCHWc_update")')].splitlines()
        loops = [ln.strip() for ln in before if ln.strip().startswith("for ")]
        assert "T.vectorized" in loops[-1] and "T.unroll" in loops[-2], (name, loops[-3:])
    tasks = P.extract_tasks(prepared, tgt, prepared=True)
    names = [t.task_name for t in tasks]
    assert names and not any("NCHWc" in n for n in names), names
    searched = P.extract_tasks(mod, tgt, P.PipelineOptions(layout="NCHWc", block=16))
    assert len(searched) == len(tasks) + 4


@pytest.mark.parametrize("block", [8, 16])
def test_fixed_rule_results_match_pytorch(net, block):
    from tvmflow.adapter.runtime import local_session
    model, x, mod = net
    opts = P.PipelineOptions(layout="NCHWc", block=block, conv_rule="fixed")
    ex, cov = P.build(mod, _host(), None, options=opts)
    assert len(cov["fixed"]) == 4
    out = local_session().load(ex).infer(x.numpy())
    with torch.no_grad():
        ref = model(x).numpy()
    assert out.shape == ref.shape
    assert float(np.abs(out - ref).max()) <= TOL


def test_verify_cli_with_the_fixed_rule(run_cli):
    out = run_cli("verify", "-v", "pruned-a8", "--frontend", "torch", "--layout", "NCHWc",
                  "--conv-rule", "fixed", timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "fixed conv rule" in out.stdout
    assert "blocked stem" in out.stdout
    bad = run_cli("tune", "-v", "pruned", "--conv-rule", "fixed")
    assert bad.returncode == 2 and bad.stderr.startswith("Error: --conv-rule needs --layout NCHWc")


@pytest.mark.parametrize("block", [8, 16])
def test_blocked_stem_writes_nchwc_from_the_rgb_input(net, block):
    """With the blocked stem the first conv (3 input channels) reads its input as one chunk
    and writes NCHW{block}c itself: every conv is blocked and fixed, and results hold."""
    from tvmflow.adapter.runtime import local_session
    model, x, mod = net
    tgt = _host()
    opts = P.PipelineOptions(layout="NCHWc", block=block, conv_rule="fixed", blocked_stem=True)
    summary = P.layout_summary(mod, tgt, opts)
    assert summary["convs"] == {"NCHW3c": 1, f"NCHW{block}c": 4}, summary
    plain = P.layout_summary(mod, tgt, P.PipelineOptions(layout="NCHWc", block=block))
    assert plain["convs"] == {"NCHW": 1, f"NCHW{block}c": 4}, plain
    ex, cov = P.build(mod, tgt, None, options=opts)
    assert len(cov["fixed"]) == 5
    out = local_session().load(ex).infer(x.numpy())
    with torch.no_grad():
        ref = model(x).numpy()
    assert float(np.abs(out - ref).max()) <= TOL


class _Stem(nn.Module):
    def __init__(self, cin: int, twice: bool):
        super().__init__()
        self.a = nn.Conv2d(cin, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 1)
        self.twice = twice

    def forward(self, x):
        y = self.a(x)
        out = self.b(torch.relu(y))
        return out + y.mean() if self.twice else out


@pytest.mark.parametrize("cin,twice,rewritten", [
    (3, False, True),    # the control: a stem
    (3, True, False),    # the conv's output is used outside the epilogue
    (12, False, False),  # more input channels than the block
])
def test_blocked_stem_only_rewrites_stems(cin, twice, rewritten):
    from tvmflow.adapter.frontend import from_torch
    from tvmflow.adapter.runtime import local_session
    torch.manual_seed(0)
    model = _Stem(cin, twice).eval()
    x = torch.randn(1, cin, 8, 8)
    mod = from_torch(model, x)
    tgt = _host()
    opts = P.PipelineOptions(layout="NCHWc", block=8, conv_rule="fixed", blocked_stem=True)
    convs = P.layout_summary(mod, tgt, opts)["convs"]
    assert ("NCHW" not in convs) == rewritten, convs
    ex, _cov = P.build(mod, tgt, None, options=opts)
    out = local_session().load(ex).infer(x.numpy())
    with torch.no_grad():
        assert float(np.abs(out - model(x).numpy()).max()) <= TOL
    with pytest.raises(TvmflowError, match="blocked stem needs layout NCHWc"):
        P.PipelineOptions(blocked_stem=True)
