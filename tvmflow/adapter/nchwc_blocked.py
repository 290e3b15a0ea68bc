"""Passes that keep more of the network in the blocked layout after ``ConvertLayout``:
:func:`stem_pass` (the first conv writes ``NCHW{b}c`` itself) and :func:`shuffle_pass`
(channel shuffles as one gather in the blocked layout).  Both rewrite the chains of
bindings that end at a ``layout_transform`` (:func:`rewrite_transforms`).
"""

from __future__ import annotations

import functools
from typing import Any

from tvmflow.adapter.relax_passes import const_value, function_pass, maps, op_name, static_shape

#: channel-wise unary ops a stem conv's epilogue may hold (see :func:`stem_pass`)
STEM_UNARY = {"relax.nn.relu", "relax.nn.relu6", "relax.clip", "relax.sigmoid", "relax.tanh",
              "relax.nn.silu", "relax.nn.leakyrelu"}
STEM_BINARY = {"relax.add", "relax.multiply", "relax.subtract"}


class Bindings:
    """The bound value of each variable of a Relax function, and how often each is used."""

    def __init__(self):
        self.value: dict[Any, Any] = {}
        self.uses: dict[Any, int] = {}


def bindings(func) -> Bindings:
    from tvm import relax
    out = Bindings()

    @relax.expr_functor.visitor
    class _Scan(relax.PyExprVisitor):
        def visit_var_binding_(self, binding):
            out.value[binding.var] = binding.value
            super().visit_var_binding_(binding)

        def visit_var_(self, var):
            out.uses[var] = out.uses.get(var, 0) + 1

        def visit_dataflow_var_(self, var):
            out.uses[var] = out.uses.get(var, 0) + 1

    _Scan().visit_expr(func)
    return out


def rewrite_transforms(name: str, match, emit):
    """A module pass that rewrites the chains ending at a ``layout_transform``.

    ``match(bindings, call)`` looks at each ``layout_transform`` call of a Relax function and
    returns ``(payload, dropped)`` or None: ``dropped`` are the variables of the chain, used
    only inside it, whose bindings go; ``emit(builder, visit, payload)`` emits the
    replacement and returns the expression the transform's variable then stands for.
    """
    from tvm import relax

    @relax.expr_functor.mutator
    class _Rewrite(relax.PyExprMutator):
        def __init__(self, mod, rewrites, skip):
            super().__init__(mod)
            self.rewrites, self.skip = rewrites, skip

        def visit_var_binding_(self, binding):
            if binding.var in self.skip:
                return
            payload = self.rewrites.get(binding.var)
            if payload is None:
                super().visit_var_binding_(binding)
                return
            self.set_var_remap(binding.var, emit(self.builder_, self.visit_expr, payload))

    def rewrite(mod, func):
        scan = bindings(func)
        rewrites, skip = {}, set()
        for var, value in scan.value.items():
            if op_name(value) == "relax.layout_transform":
                found = match(scan, value)
                if found is not None:
                    rewrites[var], dropped = found
                    skip.update(dropped)
        if not rewrites:
            return None
        mutator = _Rewrite(mod, rewrites, skip)
        new = mutator.visit_expr(func)
        return mutator.builder_.get(), new  # with any PrimFunc the rewrite added

    return function_pass(name, rewrite)


# ------------------------------------------------------------------------------ the stem


def stem_pass(block: int):
    """Blocked output for the convs ``ConvertLayout`` leaves in NCHW because their input
    channels do not divide by the block (the network's first conv, on 3 RGB channels).

    ``ConvertLayout`` keeps such a conv, and its bias and activation, in NCHW and transforms
    the activation to ``NCHW{b}c`` for the next conv -- an extra pass over the largest
    activation of the network, and an unblocked conv.  This pass rewrites ``conv2d(x) ->
    channel-wise epilogue -> layout_transform(NCHW -> NCHW{b}c)`` (each value used once) into
    a conv that reads its input as one chunk of all its channels (``NCHW{cin}c``, a transform
    of the small input only) and writes ``NCHW{b}c``, with the epilogue's per-channel
    constants blocked alike -- what ONNX Runtime's NCHWc transformer does for the first conv
    (its NCHW-input kernel).  Only convs of groups 1 with at most ``block`` input channels,
    output channels a multiple of ``block`` and constant weights are rewritten.
    """
    return rewrite_transforms("TvmflowBlockedStem", functools.partial(_stem_match, block),
                              functools.partial(_stem_emit, block))


def _to_blocked(block: int, idx_map, c: int) -> bool:
    """Whether ``idx_map`` is NCHW -> NCHW{block}c."""
    return all(maps(idx_map, p, (p[0], p[1] // block, p[2], p[3], p[1] % block))
               for p in ((0, 0, 0, 0), (0, c - 1, 2, 3), (0, min(block + 1, c - 1), 1, 0)))


def _stem_epilogue_arg(call, c: int):
    """The variable a stem epilogue op ``call`` reads (its one constant operand per-channel
    or scalar), or None."""
    from tvm import relax
    name = op_name(call)
    if name in STEM_UNARY and len(call.args) == 1:
        return call.args[0]
    if name not in STEM_BINARY or len(call.args) != 2:
        return None
    var_args = [a for a in call.args if isinstance(a, relax.Var)]
    consts = [const_value(a) for a in call.args if not isinstance(a, relax.Var)]
    if len(var_args) != 1 or len(consts) != 1 or consts[0] is None:
        return None
    k = consts[0]
    if not (k.size == 1 or k.shape in ((1, c, 1, 1), (c, 1, 1))):
        return None
    return var_args[0]


def _stem_chain(block: int, scan, start, c: int):
    """``(conv call, [the conv, then its epilogue calls])`` ending at ``start``, or None."""
    ops = []
    v = start
    while True:
        call = scan.value.get(v)
        name = op_name(call)
        if name is None:
            return None
        if name == "relax.nn.conv2d":
            break
        nxt = _stem_epilogue_arg(call, c)
        if nxt is None or scan.uses.get(nxt, 0) != 1:
            return None
        ops.append(call)
        v = nxt
    a = call.attrs
    w = const_value(call.args[1])
    if (w is None or w.ndim != 4 or int(a.groups) != 1 or str(a.data_layout) != "NCHW"
            or str(a.kernel_layout) != "OIHW" or str(a.out_layout) != "NCHW"):
        return None
    o, cin = w.shape[:2]
    if o != c or o % block or cin > block or cin % block == 0:
        return None
    return call, [call] + ops[::-1]


def _stem_match(block: int, scan, value):
    from tvm import relax
    src = value.args[0]
    shape = static_shape(src)
    if not shape or len(shape) != 4 or scan.uses.get(src, 0) != 1 \
            or not _to_blocked(block, value.attrs.index_map, shape[1]):
        return None
    found = _stem_chain(block, scan, src, shape[1])
    if found is None:
        return None
    conv, calls = found
    # every value of the chain but the conv's input: dropped, rebuilt blocked
    dropped, v = set(), src
    while True:
        dropped.add(v)
        call = scan.value[v]
        if call.same_as(conv):
            break
        v = next(a for a in call.args if isinstance(a, relax.Var))
    return calls, dropped


def _stem_emit(block: int, builder, visit, chain):
    import numpy as np
    from tvm import relax
    conv, *epilogue = chain
    a = conv.attrs
    w = const_value(conv.args[1])
    o, cin, kh, kw = w.shape
    xb = builder.emit(relax.op.layout_transform(
        visit(conv.args[0]), index_map=lambda n, ch, h, ww: (n, ch // cin, h, ww, ch % cin)))
    wb = w.reshape(o // block, block, 1, cin, kh, kw).transpose(0, 2, 4, 5, 3, 1)
    out = builder.emit(relax.op.nn.conv2d(
        xb, relax.const(np.ascontiguousarray(wb)), a.strides, a.padding, a.dilation, 1,
        f"NCHW{cin}c", f"OIHW{cin}i{block}o", f"NCHW{block}c", a.out_dtype))
    for call in epilogue:
        args = []
        for arg in call.args:
            k = None if isinstance(arg, relax.Var) else const_value(arg)
            if k is None:
                args.append(out)
            elif k.size == 1:
                args.append(arg)
            else:
                kb = k.reshape(1, o // block, block, 1, 1).transpose(0, 1, 3, 4, 2)
                args.append(relax.const(np.ascontiguousarray(kb)))
        out = builder.emit(relax.Call(call.op, args, call.attrs, call.ty_args))
    return out


# ------------------------------------------------------------------------------ shuffles


def channel_shuffle_nchwc(data, groups: int):
    """ShuffleNet's channel shuffle of ``groups`` groups, on an NCHW[x]c tensor: output
    channel ``j * groups + a`` is input channel ``a * (C / groups) + j``, one gather."""
    from tvm import te
    n, cc, h, w, b = [int(d) for d in data.shape]
    per = cc * b // groups

    def body(i, oc, y, x, ob):
        c = oc * b + ob
        src = (c % groups) * per + c // groups
        return data[i, src // b, y, x, src % b]

    return te.compute((n, cc, h, w, b), body, name="channel_shuffle", tag="injective")


def shuffle_pass(block: int):
    """Channel shuffles (``reshape -> permute_dims -> reshape``) kept in NCHW[b]c.

    ``ConvertLayout`` cannot carry a shuffle's reshapes along, so it wraps each one in a
    transform back to NCHW and one to NCHW{b}c again: two extra passes over the activation
    at every shuffle (grouped-wide has six).  This pass rewrites ``layout_transform(to NCHW)
    -> reshape(N, g, C/g, H, W) -> permute_dims(0, 2, 1, 3, 4) -> reshape(N, C, H, W) ->
    layout_transform(to NCHW{b}c)`` (each value used once) into one gather in the blocked
    layout (:func:`channel_shuffle_nchwc`)."""
    return rewrite_transforms("TvmflowBlockedShuffle", functools.partial(_shuffle_match, block),
                              _shuffle_emit)


def _used_once(scan, var, name):
    """The call of op ``name`` bound to ``var`` when ``var`` is used once, else None."""
    call = scan.value.get(var)
    return call if op_name(call) == name and scan.uses.get(var, 0) == 1 else None


def _shuffle_match(block: int, scan, t2):
    """``((blocked input, groups), the values replaced)`` of a shuffle ending at ``t2``."""
    r2 = t2.args[0]
    reshape2 = _used_once(scan, r2, "relax.reshape")
    perm = None if reshape2 is None else _used_once(scan, reshape2.args[0], "relax.permute_dims")
    reshape1 = None if perm is None else _used_once(scan, perm.args[0], "relax.reshape")
    back = None if reshape1 is None else _used_once(scan, reshape1.args[0],
                                                    "relax.layout_transform")
    if back is None:
        return None
    src = back.args[0]
    blocked, flat, five = static_shape(src), static_shape(r2), static_shape(perm.args[0])
    if not blocked or len(blocked) != 5 or blocked[4] != block or not flat or \
            len(flat) != 4 or not five or len(five) != 5:
        return None
    n, c, h, w = flat
    g = five[1]
    axes = [int(a) for a in perm.attrs.axes]
    if axes != [0, 2, 1, 3, 4] or five != [n, g, c // g, h, w] or c % g or \
            blocked != [n, c // block, h, w, block] or \
            static_shape(reshape1.args[0]) != flat:
        return None
    probe = (0, min(1, blocked[1] - 1), 1, 0, block - 1)
    if not maps(back.attrs.index_map, probe, (0, probe[1] * block + probe[4], probe[2], probe[3])):
        return None
    c0 = min(block + 1, c - 1)
    if not maps(t2.attrs.index_map, (0, c0, 1, 0), (0, c0 // block, 1, 0, c0 % block)):
        return None
    return (src, g), {r2, reshape2.args[0], perm.args[0], reshape1.args[0]}


def _shuffle_emit(builder, visit, found):
    src, g = found
    return builder.emit_te(channel_shuffle_nchwc, visit(src), g,
                           primfunc_name_hint="channel_shuffle")
