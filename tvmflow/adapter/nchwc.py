"""The NCHWc layout (NeoCPU / ONNX Runtime's NCHWc transformer) for CPU targets.

Relax passes, run by :mod:`.pipeline` for ``layout="NCHWc"``:

* :func:`pad_channels_pass` (:mod:`.nchwc_pad`) -- before the layout change, zero-pad every
  plain conv2d (groups 1, or depthwise) whose channel count is not a multiple of the block,
  so that it can run blocked too.  Results are unchanged.
* ``ConvertLayout`` to ``NCHW{b}c`` / ``OIHW{b}i{b}o`` (TVM's own pass), which carries
  add, ReLU and the pools along and leaves convs whose channels do not divide by the block
  (grouped convs with odd per-group widths) in NCHW, as ORT does.  The weights' layout
  transforms are on constants, so ``FoldConstant`` prepacks them at compile time.
* :func:`stem_pass` (option ``blocked_stem``, :mod:`.nchwc_blocked`) -- the first conv, on 3
  input channels, reads its input as one chunk and writes the blocked layout itself;
* :func:`shuffle_pass` (option ``blocked_shuffle``, :mod:`.nchwc_blocked`) -- channel
  shuffles become one gather in the blocked layout instead of two transforms;
* :func:`legalize_map` -- a LegalizeOps entry for conv2d in a blocked layout, to
  :func:`conv2d_nchwc` (TVM 0.27's stock legalization refuses 5-D layouts); NCHW convs
  keep the stock one.

The block is the target's float32 vector width: 16 for AVX-512, 8 for AVX2, 4 for NEON.
The blocked convs' schedules come from MetaSchedule's search, or (``conv_rule="fixed"``) from
the fixed rule of :mod:`.conv_rule`.
"""

from __future__ import annotations

from typing import Any

from tvmflow.adapter.nchwc_blocked import channel_shuffle_nchwc, shuffle_pass, stem_pass
from tvmflow.adapter.nchwc_pad import pad_channels_pass
from tvmflow.adapter.relax_passes import op_name

__all__ = ["COMPUTE", "channel_shuffle_nchwc", "conv2d_nchwc", "convert_layout_pass",
           "layout_summary", "legalize_map", "pad_channels_pass", "shuffle_pass", "stem_pass",
           "vector_block"]


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



def convert_layout_pass(block: int):
    from tvm import relax
    return relax.transform.ConvertLayout(
        {"relax.nn.conv2d": [f"NCHW{block}c", f"OIHW{block}i{block}o"]})



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
            name = op_name(call)
            if name == "relax.nn.conv2d":
                layout = str(call.attrs.data_layout)
                convs[layout] = convs.get(layout, 0) + 1
                wshape = [int(d) for d in call.args[1].ty.shape.values]
                groups = int(call.attrs.groups)
                if len(wshape) == 6:  # O/b, I/b, H, W, bi, bo
                    cout, cin = wshape[0] * wshape[5], wshape[1] * wshape[4] * groups
                else:
                    cout, cin = wshape[0], wshape[1] * groups
                channels.append((layout, cin, cout, groups))
            elif name == "relax.layout_transform" and \
                    not isinstance(call.args[0], tvm.ir.expr.Constant):
                transforms += 1
            super().visit_call_(call)

    _Count().visit_expr(mod["main"])
    return {"convs": convs, "conv_channels": channels, "data_transforms": transforms}

