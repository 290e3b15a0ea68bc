"""What the adapter's Relax passes share: one module pass over the Relax functions of a
module (:func:`function_pass`), and small readers of Relax expressions (the op a call
calls, a constant's value, a static shape, where an index map sends an index).

Used by the NCHWc passes (:mod:`.nchwc_pad`, :mod:`.nchwc_blocked`) and the BatchNorm
folding (:mod:`.fold`).
"""

from __future__ import annotations

from typing import Any, Callable


def function_pass(name: str, rewrite: Callable[[Any, Any], Any]):
    """A module pass (opt level 0, ``name``) that rewrites each Relax function of a module.

    ``rewrite(mod, func)`` returns the new function; None to leave the function as it is;
    or ``(module, function)`` when the rewrite added functions of its own (a PrimFunc from
    ``emit_te``): the pass then goes on with that module and puts the new function into it.
    The functions are those of the module the pass was given, in its order.
    """
    import tvm
    from tvm import relax

    @tvm.transform.module_pass(opt_level=0, name=name)
    def _pass(mod, _ctx):
        for gv, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                new = rewrite(mod, func)
                if isinstance(new, tuple):
                    mod, new = new
                if new is not None:
                    mod[gv] = new
        return mod

    return _pass


def op_name(expr) -> str | None:
    """The name of the Relax op ``expr`` calls (``"relax.add"``), None when it is no call of
    an op (a call of a function, a variable, a constant ...)."""
    import tvm
    from tvm import relax
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        return expr.op.name
    return None


def const_value(expr):
    """The numpy value of a Relax tensor constant, or None (a scalar immediate too)."""
    import tvm
    value = getattr(expr, "value", None) if isinstance(expr, tvm.ir.expr.Constant) else None
    return value.numpy() if hasattr(value, "numpy") else None


def static_shape(expr) -> list[int] | None:
    """The static shape of a Relax expression, or None."""
    try:
        return [int(d) for d in expr.ty.shape.values]
    except (TypeError, AttributeError):
        return None


def maps(idx_map, probe, want) -> bool:
    """Whether the index map sends the indices ``probe`` to ``want`` (False for a map of
    another rank)."""
    import tvm
    try:
        got = [int(v) for v in idx_map.map_indices([tvm.tirx.IntImm("int64", p)
                                                    for p in probe])]
        return got == list(want)
    except Exception:  # noqa: BLE001 - another rank
        return False
