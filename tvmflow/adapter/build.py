"""Build a Relax module for a target and run it on a local device."""

from __future__ import annotations

import numpy as np


def build(mod, target):
    """Compile with TVM's default pipeline (no tuning database)."""
    import tvm
    return tvm.compile(mod, target=target)


def run_local(executable, x: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Run ``main`` of a built executable (or a loaded library) on a local device."""
    import tvm
    from tvm import relax
    dev = tvm.cpu() if device == "cpu" else tvm.cuda()
    vm = relax.VirtualMachine(executable, dev)
    out = vm["main"](tvm.runtime.tensor(np.ascontiguousarray(x), dev))
    return first_output(out)


def first_output(out) -> np.ndarray:
    """The imported NIN returns a 1-tuple (an Array in the VM); unwrap it."""
    if hasattr(out, "numpy"):
        return out.numpy()
    return out[0].numpy()
