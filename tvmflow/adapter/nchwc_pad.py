"""Zero-padding of conv channels to the NCHWc block (:func:`pad_channels_pass`).

Before the layout change, every plain conv2d (groups 1, or depthwise) whose channel count
is not a multiple of the block is zero-padded so that it can run blocked too: its output
channels are padded with zero filters (and zero bias); the convs that consume them get zero
input-channel weights for the padded channels.  The padded channels only ever pass through
channel-wise ops (bias add, ReLU, pools), which never mix them into real channels; any
other op gets its input sliced back to the real channels first, and so does the function's
result.  Results are unchanged.
"""

from __future__ import annotations

from typing import Any

from tvmflow.adapter.relax_passes import const_value, function_pass, op_name, static_shape

#: channel-wise ops: the padded channels may pass through them (each output channel depends
#: only on the same input channel)
CHANNELWISE = {"relax.nn.relu", "relax.nn.relu6", "relax.clip", "relax.sigmoid", "relax.tanh",
               "relax.nn.silu", "relax.nn.gelu", "relax.nn.max_pool2d", "relax.nn.avg_pool2d",
               "relax.nn.adaptive_avg_pool2d", "relax.add", "relax.multiply", "relax.subtract",
               "relax.divide", "relax.maximum", "relax.minimum", "relax.nn.leakyrelu",
               "relax.nn.dropout"}
BINARY = {"relax.add", "relax.multiply", "relax.subtract", "relax.divide", "relax.maximum",
          "relax.minimum"}


def _ceil(n: int, b: int) -> int:
    return -(-n // b) * b


class _PadRules:
    """How each call changes when its arguments carry padded channels.

    ``real`` maps each variable whose channels are padded to ``(real C, padded C)``;
    ``builder`` is the mutator's block builder (the slices and pads are emitted there).
    Each rule returns ``(new call, (real C, padded C) or None)``.
    """

    def __init__(self, block: int, builder):
        self.block, self.builder = block, builder
        self.real: dict[Any, tuple[int, int]] = {}

    def unpad(self, expr):
        """``expr`` with the padded channels sliced off (when it has some)."""
        from tvm import relax
        if isinstance(expr, relax.Var) and expr in self.real:
            c, _cp = self.real[expr]
            return self.builder.emit(relax.op.strided_slice(expr, [1], [0], [c]))
        return expr

    def unpad_all(self, expr):
        from tvm import relax
        if isinstance(expr, relax.Call):
            args = [self.unpad(a) for a in expr.args]
            return relax.Call(expr.op, args, expr.attrs, expr.ty_args)
        if isinstance(expr, relax.Tuple):
            return relax.Tuple([self.unpad(f) for f in expr.fields])
        return expr

    def rewrite(self, call):
        name = op_name(call)
        if name == "relax.nn.conv2d":
            return self.conv(call)
        if name in CHANNELWISE:
            return self.channelwise(call)
        return self.unpad_all(call), None

    def conv(self, call):
        import numpy as np
        from tvm import relax
        x, w = call.args
        a = call.attrs
        wt = const_value(w)
        ok = (wt is not None and str(a.data_layout) == "NCHW" and str(a.kernel_layout) == "OIHW"
              and str(a.out_layout) == "NCHW" and wt.ndim == 4)
        if not ok:
            return self.unpad_all(call), None
        groups = int(a.groups)
        o, i_per_g = wt.shape[0], wt.shape[1]
        cin = i_per_g * groups
        depthwise = groups > 1 and groups == cin and o == cin
        if groups > 1 and not depthwise:
            return self.unpad_all(call), None
        xin = x
        if x in self.real:
            c, cp = self.real[x]
            if depthwise:
                if o != c:
                    return self.unpad_all(call), None
            else:
                wt = np.concatenate([wt, np.zeros((o, cp - c) + wt.shape[2:], wt.dtype)], 1)
            cin = cp
        op = _ceil(o, self.block)
        if depthwise:
            op = cin  # follows its input's padding
            if op == o and x not in self.real and o % self.block:
                op = _ceil(o, self.block)
                xin = self.builder.emit(relax.op.nn.pad(x, [0, 0, 0, op - o, 0, 0, 0, 0]))
        if op != o:
            wt = np.concatenate([wt, np.zeros((op - o,) + wt.shape[1:], wt.dtype)], 0)
        new = relax.op.nn.conv2d(xin, relax.const(wt), a.strides, a.padding, a.dilation,
                                 op if depthwise else 1, "NCHW", "OIHW", "NCHW", a.out_dtype)
        return new, ((o, op) if op != o else None)

    def channelwise(self, call):
        from tvm import relax
        args = list(call.args)
        padded = [a for a in args if isinstance(a, relax.Var) and a in self.real]
        if not padded:
            return call, None
        state = self.real[padded[0]]
        if any(self.real[p] != state for p in padded):
            return self.unpad_all(call), None
        if call.op.name not in BINARY:
            return (call, state) if len(args) == 1 else (self.unpad_all(call), None)
        new_args = [self.binary_operand(call.op.name, arg, state) for arg in args]
        if any(a is None for a in new_args):
            return self.unpad_all(call), None
        return relax.Call(call.op, new_args, call.attrs, call.ty_args), state

    def binary_operand(self, name: str, arg, state):
        """The operand ``arg`` of a binary op whose other operand is padded, for the padded
        channels; None when it cannot follow them."""
        import numpy as np
        from tvm import relax
        if isinstance(arg, relax.Var) and arg in self.real:
            return arg
        c, cp = state
        val = const_value(arg)
        shape = static_shape(arg)
        if shape is None:
            return None
        if len(shape) == 0 or (len(shape) == 4 and shape[1] == 1) or len(shape) < 3:
            # broadcast along channels (scalar or per-position): fine as is; a trailing
            # 1-D/2-D operand broadcasts over W/H, not channels
            return arg
        if val is not None and len(shape) == 4 and shape[1] == c:
            # the padded channels stay finite: divide by 1, the rest by 0
            fill = np.ones if name == "relax.divide" else np.zeros
            pad = fill(val.shape[:1] + (cp - c,) + val.shape[2:], val.dtype)
            return relax.const(np.concatenate([val, pad], 1))
        return None


def pad_channels_pass(block: int):
    """Zero-pad conv channels to multiples of ``block`` (see the module docstring)."""
    import tvm
    from tvm import relax

    @relax.expr_functor.mutator
    class _Pad(relax.PyExprMutator):
        def __init__(self, mod):
            super().__init__(mod)
            self.rules = _PadRules(block, self.builder_)

        def visit_var_binding_(self, binding):
            value = binding.value
            if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
                # remap the arguments, but rewrite before the call is normalised (its shapes
                # would not check with padded arguments)
                value = relax.Call(value.op, [self.visit_expr(a) for a in value.args],
                                   value.attrs, value.ty_args)
            else:
                value = self.visit_expr(value)
            new_value, padded = self.rules.rewrite(value)
            if padded is None:
                new_value = self.builder_.normalize(new_value)
                self.builder_.emit_normalized(relax.VarBinding(binding.var, new_value))
                return
            var = self.builder_.emit(new_value, name_hint=str(binding.var.name))
            self.rules.real[var] = padded
            self.set_var_remap(binding.var, var)

        def visit_seq_expr_(self, op):
            blocks = [self.visit_binding_block(b) for b in op.blocks]
            body = self.visit_expr(op.body)
            if isinstance(body, relax.Var) and body in self.rules.real:
                # the function returns padded channels: slice them off
                self.builder_._begin_binding_block()
                body = self.rules.unpad(body)
                blocks.append(self.builder_._end_block())
            return relax.SeqExpr(blocks, body)

    return function_pass("TvmflowPadChannels", lambda mod, func: _Pad(mod).visit_expr(func))
