"""BatchNorm folded into the conv weights (:func:`fold_bn_pass`), and the numpy folder of
small constant expressions it relies on (:func:`numpy_fold_pass`).  Run by
:mod:`.pipeline` with ``fold_bn``.
"""

from __future__ import annotations

from typing import Any

from tvmflow.adapter.relax_passes import const_value, function_pass, op_name


def fold_bn_pass():
    """Fold the inference BatchNorm into the conv weights.

    After ``DecomposeOpsForInference`` a conv + BatchNorm is ``(conv(x, W) [+ b] - mean) /
    sqrt(var + eps) * gamma + beta`` with constant per-channel operands.  This pass rewrites
    it into ``conv(x, W * a) + c`` (``a = gamma / sqrt(var + eps)``, ``c = (b - mean) * a +
    beta``), so the fused kernel has a single bias-add epilogue.
    """
    import functools
    import tvm
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, wildcard

    x, w = wildcard(), is_const()
    conv = is_op("relax.nn.conv2d")(x, w)
    bias = is_const()
    pre = conv | is_op("relax.add")(conv, bias)
    mean, std, gamma, beta = is_const(), is_const(), is_const(), is_const()
    out = is_op("relax.add")(is_op("relax.multiply")(
        is_op("relax.divide")(is_op("relax.subtract")(pre, mean), std), gamma), beta)
    rewriter = functools.partial(_fold_bn, (x, w, conv, bias, mean, std, gamma, beta))
    fold = numpy_fold_pass()
    bn = function_pass("TvmflowFoldBNRewrite",
                       lambda _mod, func: relax.dpl.rewrite_call(out, rewriter, func))

    @tvm.transform.module_pass(opt_level=0, name="TvmflowFoldBNIntoConv")
    def _pass(mod, _ctx):
        return fold(bn(fold(mod)))

    return _pass


def _fold_bn(patterns, expr, m):
    """The rewrite of one matched conv + BatchNorm (see :func:`fold_bn_pass`)."""
    import numpy as np
    from tvm import relax
    x, w, conv, bias, mean, std, gamma, beta = patterns
    c = m[conv]
    attrs = c.attrs
    layouts = (str(attrs.data_layout), str(attrs.kernel_layout))
    axis = {("NCHW", "OIHW"): 1, ("NHWC", "OHWI"): 3}.get(layouts)
    wdata = m[w].value.numpy()
    out_c = wdata.shape[0]
    shape = [1, 1, 1, 1]
    shape[axis if axis is not None else 1] = out_c
    try:
        vec = [np.broadcast_to(m[p].value.numpy(), shape).reshape(-1) if p in m else None
               for p in (bias, mean, std, gamma, beta)]
    except ValueError:
        return expr
    if axis is None:
        return expr
    b, mu, sd, g, be = vec
    a = g / sd
    shift = ((b if b is not None else 0.0) - mu) * a + be
    neww = (wdata * a.reshape((out_c,) + (1,) * (wdata.ndim - 1))).astype(wdata.dtype)
    newc = relax.op.nn.conv2d(m[x], relax.const(neww), attrs.strides, attrs.padding,
                              attrs.dilation, attrs.groups, attrs.data_layout,
                              attrs.kernel_layout, attrs.out_layout, attrs.out_dtype)
    return relax.op.add(newc, relax.const(shift.reshape(shape).astype(wdata.dtype)))


def _fold_call(call):
    """The numpy value of ``call`` when it is a small constant expression, else None."""
    import numpy as np
    from tvm import relax
    binary = {"relax.add": np.add, "relax.subtract": np.subtract, "relax.multiply": np.multiply,
              "relax.divide": np.divide}
    unary = {"relax.sqrt": np.sqrt, "relax.rsqrt": lambda a: 1 / np.sqrt(a),
             "relax.negative": np.negative}
    name = op_name(call)
    if name is None:
        return None
    if name == "relax.reshape" and isinstance(call.args[1], relax.ShapeExpr):
        a = const_value(call.args[0])
        return None if a is None else a.reshape([int(d) for d in call.args[1].values])
    vals = [const_value(a) for a in call.args]
    if any(v is None for v in vals):
        return None
    if name == "relax.expand_dims":
        return np.expand_dims(vals[0], tuple(int(i) for i in call.attrs.axis))
    if name in binary and len(vals) == 2:
        out = binary[name](vals[0], vals[1])
        return out.astype(np.result_type(vals[0].dtype, vals[1].dtype))
    if name in unary and len(vals) == 1:
        return unary[name](vals[0]).astype(vals[0].dtype)
    return None


def numpy_fold_pass():
    """Fold the small constant expressions a decomposed BatchNorm leaves (``reshape``,
    ``expand_dims``, ``sqrt(var + eps)``, elementwise arithmetic of constants) with numpy.

    ``relax.transform.FoldConstant`` does the same by compiling every such expression with
    LLVM, about 4 s per NIN variant on 2 cores -- most of an NCHW build's time."""
    import numpy as np
    from tvm import relax

    @relax.expr_functor.mutator
    class _Fold(relax.PyExprMutator):
        def __init__(self, mod):
            super().__init__(mod)
            self.consts: dict[Any, Any] = {}  # folded variable -> its constant

        def visit_var_binding_(self, binding):
            folded = _fold_call(self.visit_expr(binding.value))
            if folded is None:
                super().visit_var_binding_(binding)
                return
            # the binding goes: every use of the variable takes the constant itself
            self.consts[binding.var] = relax.const(np.ascontiguousarray(folded))

        def visit_var_(self, var):
            const = self.consts.get(var)
            return const if const is not None else super().visit_var_(var)

        def visit_dataflow_var_(self, var):
            const = self.consts.get(var)
            return const if const is not None else super().visit_dataflow_var_(var)

    return function_pass("TvmflowNumpyFoldConstant", lambda mod, func: _Fold(mod).visit_expr(func))
