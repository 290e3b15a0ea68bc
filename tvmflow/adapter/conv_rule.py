"""A fixed NeoCPU-style schedule for the blocked convs of the NCHWc layout.

NeoCPU (Liu et al., USENIX ATC'19) and ONNX Runtime's MLAS NCHWc kernels schedule a conv in
``NCHW[x]c`` the same way on every CPU, with no search:

* the output-channel lanes of a chunk (``ob``, the block) are the vector;
* a register tile of ``xi`` output columns by ``oci`` output chunks (one vector of lanes
  each) is accumulated in registers while the reduction runs over the input chunks, the
  kernel rows and columns and the input lanes (``icc, kh, kw, icb``): per input lane ``oci``
  weight vector loads, ``xi`` broadcasts and ``xi * oci`` FMAs (:func:`register_tile`);
* the outer loops (batch, output chunk, row) are fused and run in parallel, the columns are
  cut into ``ow // xi`` tiles, and the fused epilogue (bias, ReLU, ...) runs on each tile
  while it is still in registers;
* zero padding of the input is a separate, parallel pass.

:func:`schedule_conv` is that schedule; the module pass of :func:`apply_pass` schedules
every fused PrimFunc whose main block is the ``conv2d_NCHWc`` compute of :mod:`.nchwc` and
marks it ``tirx.is_scheduled``, so MetaSchedule neither extracts it as a task nor applies a
record to it.  The other PrimFuncs (pools, convs left in NCHW) are tuned as before.
"""

from __future__ import annotations

CONV_BLOCK = "conv2d_NCHWc"
RULE_ATTR = "tvmflow.fixed_rule"  # set on the PrimFuncs this rule scheduled


def accumulators(lanes: int) -> int:
    """Vector accumulators a register tile may hold: the register file (32 vector registers
    with AVX-512, 16 with AVX2 and NEON) less room for the weight vectors and the broadcast
    operand."""
    return 28 if lanes >= 16 else 12


def register_tile(ow: int, occ: int, lanes: int) -> tuple[int, int]:
    """``(columns, output chunks)`` of a register tile: ``xi`` columns of the output row (a
    divisor of ``ow``) by ``oci`` output chunks (a divisor of ``occ``), at most
    :func:`accumulators` vectors.

    Each step of the reduction loads ``oci`` weight vectors and broadcasts ``xi`` input values
    for ``xi * oci`` FMAs, so the tile with the fewest loads per FMA, ``1/xi + 1/oci``, keeps
    the load ports from starving the FMA units: a square-ish tile (4 x 4, 4 x 6, 4 x 7), as in
    MLAS's NCHWc kernels, rather than a long row of columns.  Ties go to the larger tile, then
    to more columns.  (Measured on pruned-a8's blocked convs, 2 threads, Emerald Rapids: 4 x 4
    ran 1.25-1.6x as fast as 16 x 1 on the 16- and 32-wide rows; README.)
    """
    cap = accumulators(lanes)
    best = None
    for xi in (d for d in range(1, min(ow, cap) + 1) if ow % d == 0):
        for oci in (d for d in range(1, min(occ, cap // xi) + 1) if occ % d == 0):
            key = (1 / xi + 1 / oci, -xi * oci, -xi)
            if best is None or key < best[0]:
                best = (key, (xi, oci))
    return best[1]


def _extent(sch, loop) -> int:
    return int(sch.get(loop).extent)


def schedule_conv(func):
    """The fixed schedule of one fused NCHWc conv PrimFunc, or None when ``func`` is not one
    (or has a shape this rule does not handle)."""
    from tvm import s_tir
    sch = s_tir.Schedule(func)
    if not _has_root(sch):
        return None
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    names = [sch.get(b).name_hint for b in blocks]
    if CONV_BLOCK not in names:
        return None
    ci = names.index(CONV_BLOCK)
    conv = blocks[ci]
    pre, post = blocks[:ci], blocks[ci + 1:]
    loops = sch.get_loops(conv)
    if len(loops) != 9:  # n, oc, y, x, ob, icc, kh, kw, icb
        return None
    n, oc, y, x, ob, icc, kh, kw, icb = loops
    lanes = _extent(sch, ob)
    xi_n, oci_n = register_tile(_extent(sch, x), _extent(sch, oc), lanes)

    # the producers (input padding): a parallel, vectorized pass of their own
    for blk in pre:
        _parallel_injective(sch, blk)

    # the epilogue: the chain of elementwise blocks folded into its first block, run on each
    # register tile while it is hot; with none, a copy-out block plays that part
    try:
        for blk in reversed(post[1:]):
            sch.reverse_compute_inline(blk)
    except Exception:  # noqa: BLE001 - a schedule error: not an elementwise chain
        return None
    # the tile's accumulators in "local" scope: a stack array LLVM keeps in registers (a
    # buffer in global scope may come from the workspace allocator, which it cannot)
    if post:
        epilogue = post[0]
        sch.set_scope(conv, 0, "local")
    else:
        epilogue = sch.cache_write(conv, 0, "local")  # the copy-out block

    oco, oci = sch.split(oc, [None, oci_n])
    xo, xi = sch.split(x, [None, xi_n])
    sch.reorder(n, oco, y, xo, icc, kh, kw, icb, oci, xi, ob)
    sch.parallel(sch.fuse(n, oco, y))
    sch.unroll(oci)
    sch.unroll(xi)
    sch.vectorize(ob)
    sch.reverse_compute_at(epilogue, xo, preserve_unit_loops=True)
    _unroll_vectorize(sch, sch.get_loops(epilogue)[2:], lanes)
    init = sch.decompose_reduction(conv, icc)
    _unroll_vectorize(sch, sch.get_loops(init)[2:], lanes)
    return sch.mod["main"].with_attr("tirx.is_scheduled", True).with_attr(RULE_ATTR, CONV_BLOCK)


def _unroll_vectorize(sch, loops, lanes: int) -> None:
    """Vectorize the innermost loop of a tile's loops when it spans the lanes, unroll the rest."""
    if not loops:
        return
    *outer, inner = loops
    if _extent(sch, inner) == lanes:
        sch.vectorize(inner)
    for lp in outer:
        sch.unroll(lp)


def _has_root(sch) -> bool:
    try:
        sch.get_sblock("root")
        return True
    except Exception:  # noqa: BLE001 - a PrimFunc without a root block
        return False


def _parallel_injective(sch, blk) -> None:
    loops = sch.get_loops(blk)
    if len(loops) >= 2:
        inner = loops[-1]
        outer = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
        sch.parallel(outer)
        sch.vectorize(inner)


def apply_pass():
    """Module pass: schedule every NCHWc conv PrimFunc with :func:`schedule_conv`."""
    import tvm
    from tvm import tirx

    @tvm.transform.module_pass(opt_level=0, name="TvmflowScheduleConvNCHWc")
    def _pass(mod, _ctx):
        updates = {}
        for gv, func in mod.functions_items():
            if isinstance(func, tirx.PrimFunc) and not func.attrs.get("tirx.is_scheduled", False):
                new = schedule_conv(func)
                if new is not None:
                    updates[gv] = new
        for gv, func in updates.items():
            mod[gv] = func
        return mod

    return _pass


def fixed_functions(mod) -> list[str]:
    """Names of the PrimFuncs of ``mod`` this rule scheduled."""
    from tvm import tirx
    return sorted(gv.name_hint for gv, f in mod.functions_items()
                  if isinstance(f, tirx.PrimFunc) and f.attrs.get(RULE_ATTR) is not None)
