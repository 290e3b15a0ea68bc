"""BatchNorm folded into the conv weights, with its constant arithmetic folded in numpy."""

from __future__ import annotations

import numpy as np
import pytest

from tvmflow.adapter import pipeline as P
from tvmflow.adapter.fold import numpy_fold_pass


def _ops(func) -> dict[str, int]:
    import tvm
    from tvm import relax
    seen: dict[str, int] = {}

    @relax.expr_functor.visitor
    class _Count(relax.PyExprVisitor):
        def visit_call_(self, call):
            if isinstance(call.op, tvm.ir.Op):
                seen[call.op.name] = seen.get(call.op.name, 0) + 1
            super().visit_call_(call)

    _Count().visit_expr(func)
    return seen


@pytest.fixture(scope="module")
def pruned():
    from tvmflow.ir.frontend import import_model
    return import_model("pruned")


def test_bn_leaves_one_bias_add_per_conv(pruned):
    """After the graph passes, each conv + BN is a conv and one add: no subtract, divide,
    sqrt or expand_dims is left to run (nor to fold at build time)."""
    import tvm
    from tvmflow.target.presets import get_target
    tgt = get_target("host").tvm_target()
    passes = P._graph_passes(tgt, P.PipelineOptions())
    with tgt, tvm.transform.PassContext(opt_level=3):
        mod = tvm.transform.Sequential(passes)(pruned.mod)
    ops = _ops(mod["main"])
    assert ops["relax.nn.conv2d"] == 9
    for gone in ("relax.subtract", "relax.divide", "relax.sqrt", "relax.expand_dims",
                 "relax.multiply"):
        assert gone not in ops, ops
    assert ops["relax.add"] == 9


def test_numpy_fold_matches_tvms_fold_constant():
    """The numpy folder gives what FoldConstant gives on a decomposed BN's constants."""
    import tvm
    from tvm import relax
    rng = np.random.default_rng(0)
    var, gamma = rng.random(5, dtype=np.float32) + 0.5, rng.random(5, dtype=np.float32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 5, 2, 2), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            v = bb.emit(relax.op.expand_dims(relax.const(var), axis=[0, 2, 3]))
            s = bb.emit(relax.op.sqrt(relax.op.add(v, relax.const(1e-5, "float32"))))
            g = bb.emit(relax.op.reshape(relax.const(gamma), (1, 5, 1, 1)))
            k = bb.emit(relax.op.divide(g, s))
            out = bb.emit_output(relax.op.multiply(x, k))
        bb.emit_func_output(out)
    mod = bb.get()
    ours = numpy_fold_pass()(mod)
    theirs = relax.transform.FoldConstant()(mod)
    assert _ops(ours["main"]) == {"relax.multiply": 1} == _ops(theirs["main"])
    xs = rng.random((1, 5, 2, 2), dtype=np.float32)
    results = []
    for m in (ours, theirs):
        ex = tvm.compile(m, target="llvm")
        vm = relax.VirtualMachine(ex, tvm.cpu())
        results.append(vm["main"](tvm.runtime.tensor(xs)).numpy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6)
    np.testing.assert_allclose(results[0], xs * (gamma / np.sqrt(var + 1e-5)).reshape(1, 5, 1, 1),
                               rtol=1e-6)
