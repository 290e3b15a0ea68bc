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
    from tvmflow.targets import get_target
    return get_target("host").tvm_target()


@pytest.mark.parametrize("ow,occ,lanes,tile", [
    (32, 6, 16, (16, 1)),    # a 32-wide row: two tiles of 16 columns
    (8, 12, 16, (8, 3)),     # an 8-wide row: 8 columns x 3 output chunks = 24 accumulators
    (8, 12, 8, (8, 1)),      # AVX2: 12 accumulators, the columns first
    (7, 5, 16, (7, 1)),      # prime widths and chunk counts still tile
    (1, 4, 4, (1, 4)),
])
def test_register_tile_fits_the_register_file(ow, occ, lanes, tile):
    xi, oci = R.register_tile(ow, occ, lanes)
    assert (xi, oci) == tile
    assert ow % xi == 0 and occ % oci == 0 and xi * oci <= R.accumulators(lanes)


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
    import tvm
    from tvm import relax
    from tvmflow.adapter.build import first_output
    model, x, mod = net
    opts = P.PipelineOptions(layout="NCHWc", block=block, conv_rule="fixed")
    ex, cov = P.build(mod, _host(), None, options=opts)
    assert len(cov["fixed"]) == 4
    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = first_output(vm["main"](tvm.runtime.tensor(x.numpy())))
    with torch.no_grad():
        ref = model(x).numpy()
    assert out.shape == ref.shape
    assert float(np.abs(out - ref).max()) <= TOL


def test_verify_cli_with_the_fixed_rule(run_cli):
    out = run_cli("verify", "-v", "pruned-a8", "--frontend", "torch", "--layout", "NCHWc",
                  "--conv-rule", "fixed", timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "fixed conv rule" in out.stdout
    bad = run_cli("tune", "-v", "pruned", "--conv-rule", "fixed")
    assert bad.returncode == 2 and bad.stderr.startswith("Error: --conv-rule needs --layout NCHWc")
