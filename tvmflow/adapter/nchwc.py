"""The NCHWc layout (NeoCPU / ONNX Runtime's NCHWc transformer) for CPU targets.

Relax passes, run by :mod:`.pipeline` for ``layout="NCHWc"``:

* :func:`pad_channels_pass` -- before the layout change, zero-pad every plain conv2d
  (groups 1, or depthwise) whose channel count is not a multiple of the block, so that it
  can run blocked too: its output channels are padded with zero filters (and zero bias);
  the convs that consume them get zero input-channel weights for the padded channels.  The
  padded channels only ever pass through channel-wise ops (bias add, ReLU, pools), which
  never mix them into real channels; any other op gets its input sliced back to the real
  channels first, and so does the function's result.  Results are unchanged.
* ``ConvertLayout`` to ``NCHW{b}c`` / ``OIHW{b}i{b}o`` (TVM's own pass), which carries
  add, ReLU and the pools along and leaves convs whose channels do not divide by the block
  (grouped convs with odd per-group widths) in NCHW, as ORT does.  The weights' layout
  transforms are on constants, so ``FoldConstant`` prepacks them at compile time.
* :func:`stem_pass` (option ``blocked_stem``) -- the first conv, on 3 input channels, reads
  its input as one chunk and writes the blocked layout itself;
* :func:`shuffle_pass` (option ``blocked_shuffle``) -- channel shuffles become one gather in
  the blocked layout instead of two transforms;
* :func:`legalize_map` -- a LegalizeOps entry for conv2d in a blocked layout, to
  :func:`conv2d_nchwc` (TVM 0.27's stock legalization refuses 5-D layouts); NCHW convs
  keep the stock one.

The block is the target's float32 vector width: 16 for AVX-512, 8 for AVX2, 4 for NEON.
The blocked convs' schedules come from MetaSchedule's search, or (``conv_rule="fixed"``) from
the fixed rule of :mod:`.conv_rule`.
"""

from __future__ import annotations

from typing import Any

#: channel-wise ops: the padded channels may pass through them (each output channel depends
#: only on the same input channel)
CHANNELWISE = {"relax.nn.relu", "relax.nn.relu6", "relax.clip", "relax.sigmoid", "relax.tanh",
               "relax.nn.silu", "relax.nn.gelu", "relax.nn.max_pool2d", "relax.nn.avg_pool2d",
               "relax.nn.adaptive_avg_pool2d", "relax.add", "relax.multiply", "relax.subtract",
               "relax.divide", "relax.maximum", "relax.minimum", "relax.nn.leakyrelu",
               "relax.nn.dropout"}
BINARY = {"relax.add", "relax.multiply", "relax.subtract", "relax.divide", "relax.maximum",
          "relax.minimum"}


def vector_block(target) -> int:
    """float32 lanes of the target's widest vector unit (the NCHWc block)."""
    kind = target.kind.name
    if kind != "llvm":
        raise ValueError(f"the NCHWc layout is for CPU (llvm) targets, not {kind}")
    triple = str(target.attrs.get("mtriple", "") or "")
    if triple.startswith(("aarch64", "arm")):
        return 4
    mcpu = str(target.attrs.get("mcpu", "") or "")
    mattr = [str(a) for a in (target.attrs.get("mattr") or [])]
    if any(a.startswith("+avx512f") for a in mattr) or _cpu_has_avx512(mcpu):
        return 16
    return 8


def _cpu_has_avx512(mcpu: str) -> bool:
    """Whether LLVM's CPU ``mcpu`` has AVX-512F (asked of TVM's LLVM, not a name table)."""
    import tvm
    from tvm.target import codegen
    return bool(codegen.target_has_features("avx512f",
                                            tvm.target.Target({"kind": "llvm", "mcpu": mcpu})))


def _ceil(n: int, b: int) -> int:
    return -(-n // b) * b


def _const(expr):
    """The numpy value of a Relax constant, or None."""
    import tvm
    return expr.value.numpy() if isinstance(expr, tvm.ir.expr.Constant) else None


def _maps(idx_map, probe, want) -> bool:
    """Whether the index map sends the indices ``probe`` to ``want`` (False for a map of
    another rank)."""
    import tvm
    try:
        got = [int(v) for v in idx_map.map_indices([tvm.tirx.IntImm("int64", p)
                                                    for p in probe])]
        return got == list(want)
    except Exception:  # noqa: BLE001 - another rank
        return False


def pad_channels_pass(block: int):
    """Zero-pad conv channels to multiples of ``block`` (see the module docstring)."""
    import numpy as np
    import tvm
    from tvm import relax

    @relax.expr_functor.mutator
    class _Pad(relax.PyExprMutator):
        def __init__(self, mod):
            super().__init__(mod)
            self.real: dict[Any, tuple[int, int]] = {}  # var -> (real C, padded C)

        # -- helpers
        def _shape(self, expr):
            sinfo = expr.ty
            if not hasattr(sinfo, "shape") or sinfo.shape is None:
                return None
            try:
                return [int(d) for d in sinfo.shape.values]
            except (TypeError, AttributeError):
                return None

        def _unpad(self, expr):
            """``expr`` with the padded channels sliced off (when it has some)."""
            if isinstance(expr, relax.Var) and expr in self.real:
                c, _cp = self.real[expr]
                return self.builder_.emit(relax.op.strided_slice(expr, [1], [0], [c]))
            return expr

        def visit_var_binding_(self, binding):
            value = binding.value
            if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
                # remap the arguments, but rewrite before the call is normalised (its shapes
                # would not check with padded arguments)
                value = relax.Call(value.op, [self.visit_expr(a) for a in value.args],
                                   value.attrs, value.ty_args)
            else:
                value = self.visit_expr(value)
            new_value, padded = self._rewrite(value)
            if padded is None:
                new_value = self.builder_.normalize(new_value)
                self.builder_.emit_normalized(relax.VarBinding(binding.var, new_value))
                return
            var = self.builder_.emit(new_value, name_hint=str(binding.var.name))
            self.real[var] = padded
            self.set_var_remap(binding.var, var)

        def _rewrite(self, call):
            if not isinstance(call, relax.Call) or not isinstance(call.op, tvm.ir.Op):
                return self._unpad_all(call), None
            name = call.op.name
            if name == "relax.nn.conv2d":
                return self._conv(call)
            if name in CHANNELWISE:
                return self._channelwise(call)
            return self._unpad_all(call), None

        def _unpad_all(self, expr):
            if isinstance(expr, relax.Call):
                args = [self._unpad(a) for a in expr.args]
                return relax.Call(expr.op, args, expr.attrs, expr.ty_args)
            if isinstance(expr, relax.Tuple):
                return relax.Tuple([self._unpad(f) for f in expr.fields])
            return expr

        def _conv(self, call):
            x, w = call.args
            a = call.attrs
            wt = _const(w)
            ok = (wt is not None and str(a.data_layout) == "NCHW" and str(a.kernel_layout) == "OIHW"
                  and str(a.out_layout) == "NCHW" and wt.ndim == 4)
            if not ok:
                return self._unpad_all(call), None
            groups = int(a.groups)
            o, i_per_g = wt.shape[0], wt.shape[1]
            cin = i_per_g * groups
            depthwise = groups > 1 and groups == cin and o == cin
            if groups > 1 and not depthwise:
                return self._unpad_all(call), None
            xin = x
            if x in self.real:
                c, cp = self.real[x]
                if depthwise:
                    if o != c:
                        return self._unpad_all(call), None
                else:
                    wt = np.concatenate([wt, np.zeros((o, cp - c) + wt.shape[2:], wt.dtype)], 1)
                cin = cp
            op = _ceil(o, block)
            if depthwise:
                op = cin  # follows its input's padding
                if op == o and x not in self.real and o % block:
                    op = _ceil(o, block)
                    xin = self.builder_.emit(relax.op.nn.pad(x, [0, 0, 0, op - o, 0, 0, 0, 0]))
            if op != o:
                wt = np.concatenate([wt, np.zeros((op - o,) + wt.shape[1:], wt.dtype)], 0)
            new = relax.op.nn.conv2d(xin, relax.const(wt), a.strides, a.padding, a.dilation,
                                     op if depthwise else 1, "NCHW", "OIHW", "NCHW",
                                     a.out_dtype)
            return new, ((o, op) if op != o else None)

        def _channelwise(self, call):
            name = call.op.name
            args = list(call.args)
            padded = [a for a in args if isinstance(a, relax.Var) and a in self.real]
            if not padded:
                return call, None
            state = self.real[padded[0]]
            if any(self.real[p] != state for p in padded):
                return self._unpad_all(call), None
            c, cp = state
            if name in BINARY:
                new_args = []
                for arg in args:
                    if isinstance(arg, relax.Var) and arg in self.real:
                        new_args.append(arg)
                        continue
                    val = _const(arg)
                    shape = self._shape(arg)
                    if shape is None:
                        return self._unpad_all(call), None
                    if len(shape) == 0 or (len(shape) == 4 and shape[1] == 1) or \
                            (len(shape) < 3):
                        # broadcast along channels (scalar or per-position): fine as is;
                        # a trailing 1-D/2-D operand broadcasts over W/H, not channels
                        new_args.append(arg)
                        continue
                    if val is not None and len(shape) == 4 and shape[1] == c:
                        # the padded channels stay finite: divide by 1, the rest by 0
                        fill = np.ones if name == "relax.divide" else np.zeros
                        pad = fill(val.shape[:1] + (cp - c,) + val.shape[2:], val.dtype)
                        new_args.append(relax.const(np.concatenate([val, pad], 1)))
                        continue
                    return self._unpad_all(call), None
                return relax.Call(call.op, new_args, call.attrs, call.ty_args), state
            if len(args) != 1:
                return self._unpad_all(call), None
            return call, state

        def visit_seq_expr_(self, op):
            blocks = [self.visit_binding_block(b) for b in op.blocks]
            body = self.visit_expr(op.body)
            if isinstance(body, relax.Var) and body in self.real:
                # the function returns padded channels: slice them off
                self.builder_._begin_binding_block()
                body = self._unpad(body)
                blocks.append(self.builder_._end_block())
            return relax.SeqExpr(blocks, body)

    @tvm.transform.module_pass(opt_level=0, name="TvmflowPadChannels")
    def _pass(mod, _ctx):
        for gv, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                mod[gv] = _Pad(mod).visit_expr(func)
        return mod

    return _pass


def convert_layout_pass(block: int):
    from tvm import relax
    return relax.transform.ConvertLayout(
        {"relax.nn.conv2d": [f"NCHW{block}c", f"OIHW{block}i{block}o"]})


class _Bindings:
    """The bound value of each variable of a Relax function, and how often each is used."""

    def __init__(self):
        self.value: dict[Any, Any] = {}
        self.uses: dict[Any, int] = {}


def _static_shape(expr) -> list[int] | None:
    """The static shape of a Relax expression, or None."""
    try:
        return [int(d) for d in expr.ty.shape.values]
    except (TypeError, AttributeError):
        return None


def _bindings(func) -> _Bindings:
    from tvm import relax
    out = _Bindings()

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


def _rewrite_transforms(name: str, match, emit):
    """A module pass that rewrites the chains ending at a ``layout_transform``.

    ``match(bindings, call)`` looks at each ``layout_transform`` call of a Relax function and
    returns ``(payload, dropped)`` or None: ``dropped`` are the variables of the chain, used
    only inside it, whose bindings go; ``emit(builder, visit, payload)`` emits the
    replacement and returns the expression the transform's variable then stands for.
    """
    import tvm
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

    @tvm.transform.module_pass(opt_level=0, name=name)
    def _pass(mod, _ctx):
        for gv, func in list(mod.functions.items()):
            if not isinstance(func, relax.Function):
                continue
            scan = _bindings(func)
            rewrites, skip = {}, set()
            for var, value in scan.value.items():
                if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and \
                        value.op.name == "relax.layout_transform":
                    found = match(scan, value)
                    if found is not None:
                        rewrites[var], dropped = found
                        skip.update(dropped)
            if rewrites:
                mutator = _Rewrite(mod, rewrites, skip)
                new = mutator.visit_expr(func)
                mod = mutator.builder_.get()  # with any PrimFunc the rewrite added
                mod[gv] = new
        return mod

    return _pass


#: channel-wise unary ops a stem conv's epilogue may hold (see :func:`stem_pass`)
STEM_UNARY = {"relax.nn.relu", "relax.nn.relu6", "relax.clip", "relax.sigmoid", "relax.tanh",
              "relax.nn.silu", "relax.nn.leakyrelu"}
STEM_BINARY = {"relax.add", "relax.multiply", "relax.subtract"}


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
    import numpy as np
    import tvm
    from tvm import relax

    def _to_blocked(idx_map, c: int) -> bool:
        """Whether ``idx_map`` is NCHW -> NCHW{block}c."""
        return all(_maps(idx_map, p, (p[0], p[1] // block, p[2], p[3], p[1] % block))
                   for p in ((0, 0, 0, 0), (0, c - 1, 2, 3), (0, min(block + 1, c - 1), 1, 0)))

    def _chain(scan, start, c):
        """``(conv call, [epilogue calls, conv first])`` ending at ``start``, or None."""
        ops = []
        v = start
        while True:
            call = scan.value.get(v)
            if not isinstance(call, relax.Call) or not isinstance(call.op, tvm.ir.Op):
                return None
            name = call.op.name
            if name == "relax.nn.conv2d":
                break
            if name in STEM_UNARY and len(call.args) == 1:
                nxt = call.args[0]
            elif name in STEM_BINARY and len(call.args) == 2:
                var_args = [a for a in call.args if isinstance(a, relax.Var)]
                consts = [_const(a) for a in call.args if not isinstance(a, relax.Var)]
                if len(var_args) != 1 or len(consts) != 1 or consts[0] is None:
                    return None
                k = consts[0]
                if not (k.size == 1 or k.shape in ((1, c, 1, 1), (c, 1, 1))):
                    return None
                nxt = var_args[0]
            else:
                return None
            if scan.uses.get(nxt, 0) != 1:
                return None
            ops.append(call)
            v = nxt
        a = call.attrs
        w = _const(call.args[1])
        if (w is None or w.ndim != 4 or int(a.groups) != 1 or str(a.data_layout) != "NCHW"
                or str(a.kernel_layout) != "OIHW" or str(a.out_layout) != "NCHW"):
            return None
        o, cin = w.shape[:2]
        if o != c or o % block or cin > block or cin % block == 0:
            return None
        return call, [call] + ops[::-1]

    def _match(scan, value):
        src = value.args[0]
        shape = _static_shape(src)
        if not shape or len(shape) != 4 or scan.uses.get(src, 0) != 1 \
                or not _to_blocked(value.attrs.index_map, shape[1]):
            return None
        found = _chain(scan, src, shape[1])
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

    def _emit(builder, visit, chain):
        conv, *epilogue = chain
        a = conv.attrs
        w = _const(conv.args[1])
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
                k = None if isinstance(arg, relax.Var) else _const(arg)
                if k is None:
                    args.append(out)
                elif k.size == 1:
                    args.append(arg)
                else:
                    kb = k.reshape(1, o // block, block, 1, 1).transpose(0, 1, 3, 4, 2)
                    args.append(relax.const(np.ascontiguousarray(kb)))
            out = builder.emit(relax.Call(call.op, args, call.attrs, call.ty_args))
        return out

    return _rewrite_transforms("TvmflowBlockedStem", _match, _emit)


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
    import tvm
    from tvm import relax

    def _op(scan, var, name):
        call = scan.value.get(var)
        if isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op) and \
                call.op.name == name and scan.uses.get(var, 0) == 1:
            return call
        return None

    def _match(scan, t2):
        """``((blocked input, groups), the values replaced)`` of a shuffle ending at ``t2``."""
        r2 = t2.args[0]
        reshape2 = _op(scan, r2, "relax.reshape")
        perm = None if reshape2 is None else _op(scan, reshape2.args[0], "relax.permute_dims")
        reshape1 = None if perm is None else _op(scan, perm.args[0], "relax.reshape")
        back = None if reshape1 is None else _op(scan, reshape1.args[0],
                                                 "relax.layout_transform")
        if back is None:
            return None
        src = back.args[0]
        blocked, flat, five = _static_shape(src), _static_shape(r2), _static_shape(perm.args[0])
        if not blocked or len(blocked) != 5 or blocked[4] != block or not flat or \
                len(flat) != 4 or not five or len(five) != 5:
            return None
        n, c, h, w = flat
        g = five[1]
        axes = [int(a) for a in perm.attrs.axes]
        if axes != [0, 2, 1, 3, 4] or five != [n, g, c // g, h, w] or c % g or \
                blocked != [n, c // block, h, w, block] or \
                _static_shape(reshape1.args[0]) != flat:
            return None
        probe = (0, min(1, blocked[1] - 1), 1, 0, block - 1)
        if not _maps(back.attrs.index_map, probe,
                     (0, probe[1] * block + probe[4], probe[2], probe[3])):
            return None
        c0 = min(block + 1, c - 1)
        if not _maps(t2.attrs.index_map, (0, c0, 1, 0), (0, c0 // block, 1, 0, c0 % block)):
            return None
        return (src, g), {r2, reshape2.args[0], perm.args[0], reshape1.args[0]}

    def _emit(builder, visit, found):
        src, g = found
        return builder.emit_te(channel_shuffle_nchwc, visit(src), g,
                               primfunc_name_hint="channel_shuffle")

    return _rewrite_transforms("TvmflowBlockedShuffle", _match, _emit)


#: the TE compute blocked convs lower to: "split" (:func:`conv2d_nchwc`, the default) or
#: "topi" (``topi.nn.conv2d_NCHWc``, kept to measure against: about 1.35x as long as "split" on
#: pruned-a8, each in a run beside the same NCHW module,
#: README).  It changes the tuning workloads, so logs tuned with one do not apply to the other.
COMPUTE = "split"


def conv2d_nchwc(data, kernel, strides, padding, dilation, out_dtype: str):
    """conv2d in NCHW[x]c with OIHW[x]i[y]o weights, as a TE compute whose reduction runs
    over the input-channel chunks and the lanes of a chunk as two axes (``icc``, ``icb``).

    ``topi.nn.conv2d_NCHWc`` reduces over one fused input-channel axis and indexes the data
    with ``ic // bn`` and ``ic % bn``; MetaSchedule's tiling rules cannot split that axis
    into the chunk and the lanes, so the inner loops keep the division.  Here the loop nest
    is the NeoCPU one: output chunk, rows, columns and output lanes (the vector) spatial;
    input chunk, kernel rows, kernel columns and input lanes reduced.  Groups are supported
    when each group spans whole chunks.
    """
    from tvm import te, topi
    n, icc_n, ih, iw, ic_bn = [int(d) for d in data.shape]
    occ_n, icc_g, kh_n, kw_n, k_ic_bn, oc_bn = [int(d) for d in kernel.shape]
    groups = (icc_n * ic_bn) // (icc_g * k_ic_bn)
    sh, sw = strides
    dh, dw = dilation
    pt, pl, pb, pr = padding if len(padding) == 4 else (padding[0], padding[1]) * 2
    oh = (ih + pt + pb - (kh_n - 1) * dh - 1) // sh + 1
    ow = (iw + pl + pr - (kw_n - 1) * dw - 1) // sw + 1
    if pt or pl or pb or pr:
        data = topi.nn.pad(data, (0, 0, pt, pl, 0), (0, 0, pb, pr, 0), name="data_pad")
    icc = te.reduce_axis((0, icc_g), name="icc")
    icb = te.reduce_axis((0, k_ic_bn), name="icb")
    kh = te.reduce_axis((0, kh_n), name="kh")
    kw = te.reduce_axis((0, kw_n), name="kw")
    occ_per_group = occ_n // groups

    def body(b, oc, y, x, ob):
        chunk = icc if groups == 1 else (oc // occ_per_group) * icc_g + icc
        return te.sum(data[b, chunk, y * sh + kh * dh, x * sw + kw * dw, icb].astype(out_dtype)
                      * kernel[oc, icc, kh, kw, icb, ob].astype(out_dtype),
                      axis=[icc, kh, kw, icb])

    return te.compute((n, occ_n, oh, ow, oc_bn), body, name="conv2d_NCHWc",
                      tag="conv2d_NCHWc")


def legalize_map() -> dict[str, Any]:
    """LegalizeOps entries: conv2d in a blocked (5-D) layout to :data:`COMPUTE`'s compute;
    NCHW convs keep the stock legalization."""
    from tvm.relax.transform.legalize_ops import nn as stock

    def conv2d(bb, call):
        a = call.attrs
        if len(str(a.data_layout)) == 4 and len(str(a.kernel_layout)) == 4:
            return stock._nn_conv2d(bb, call)
        out_dtype = str(a.out_dtype)
        if out_dtype in ("", "None", "void"):  # the ONNX frontend leaves it unset
            out_dtype = str(call.args[0].ty.dtype)
        if COMPUTE == "topi":
            from tvm import topi
            return bb.call_te(topi.nn.conv2d_NCHWc, call.args[0], call.args[1],
                              [int(s) for s in a.strides], [int(p) for p in a.padding],
                              [int(d) for d in a.dilation], str(a.data_layout),
                              str(a.out_layout), str(out_dtype),
                              primfunc_name_hint="conv2d_NCHWc")
        return bb.call_te(conv2d_nchwc, call.args[0], call.args[1],
                          [int(s) for s in a.strides], [int(p) for p in a.padding],
                          [int(d) for d in a.dilation], str(out_dtype),
                          primfunc_name_hint="conv2d_NCHWc")

    return {"relax.nn.conv2d": conv2d}


def layout_summary(mod) -> dict[str, Any]:
    """What the layout passes did to ``main`` of a Relax module (before legalization).

    ``{"convs": {layout: count}, "conv_channels": [(layout, in C, out C, groups)],
    "data_transforms": n}`` -- ``data_transforms`` counts ``layout_transform`` calls on
    activations (those on constant weights fold away at compile time).
    """
    import tvm
    from tvm import relax
    convs: dict[str, int] = {}
    channels: list[tuple[str, int, int, int]] = []
    transforms = 0

    @relax.expr_functor.visitor
    class _Count(relax.PyExprVisitor):
        def visit_call_(self, call):
            nonlocal transforms
            if isinstance(call.op, tvm.ir.Op):
                if call.op.name == "relax.nn.conv2d":
                    layout = str(call.attrs.data_layout)
                    convs[layout] = convs.get(layout, 0) + 1
                    wshape = [int(d) for d in call.args[1].ty.shape.values]
                    groups = int(call.attrs.groups)
                    if len(wshape) == 6:  # O/b, I/b, H, W, bi, bo
                        cout, cin = wshape[0] * wshape[5], wshape[1] * wshape[4] * groups
                    else:
                        cout, cin = wshape[0], wshape[1] * groups
                    channels.append((layout, cin, cout, groups))
                elif call.op.name == "relax.layout_transform" and \
                        not isinstance(call.args[0], tvm.ir.expr.Constant):
                    transforms += 1
            super().visit_call_(call)

    _Count().visit_expr(mod["main"])
    return {"convs": convs, "conv_channels": channels, "data_transforms": transforms}

