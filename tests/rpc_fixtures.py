"""Test helpers for RPC servers and boards: a tiny ``add`` library built, run and timed remotely.

Not part of the shipped package (tvmflow never builds or runs this function); imported by
test_rpc_infra.py, test_rpc_deadlines.py, test_board.py and test_bench.py.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

from tvmflow.adapter import rpc
from tvmflow.errors import TvmflowError

AARCH64_TARGET = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72",
                  "mattr": ["+neon"], "num-cores": 4}


def build_add_module(path: str | Path, target: dict[str, Any] | None = None, n: int = 1024,
                     cross_cc: str | None = None) -> Path:
    """Compile a tiny float32 ``add(a, b, c)`` (c = a + b, length ``n``) into ``path`` (.so).

    ``target`` defaults to the host; with an aarch64 target pass ``cross_cc`` (e.g.
    ``aarch64-linux-gnu-gcc``): the library is linked with it through
    ``tvm.support.cc.cross_compiler``.
    """
    import tvm
    from tvm import te
    from tvm.support import cc

    A = te.placeholder((n,), "float32", name="A")
    B = te.placeholder((n,), "float32", name="B")
    C = te.compute((n,), lambda i: A[i] + B[i], name="C")
    add = te.create_prim_func([A, B, C]).with_attr("global_symbol", "add")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tgt = tvm.target.Target(dict(target)) if target else tvm.target.Target("llvm")
    lib = tvm.compile(tvm.IRModule({"add": add}), target=tgt)
    if cross_cc:
        if shutil.which(cross_cc) is None:
            raise TvmflowError(f"cross compiler {cross_cc} not found",
                               hint="apt-get install gcc-aarch64-linux-gnu g++-aarch64-linux-gnu")
        lib.export_library(str(path), fcompile=cc.cross_compiler(cross_cc))
    else:
        lib.export_library(str(path))
    return path


def run_add_check(session, lib_path: str | Path, n: int = 1024, seed: int = 0) -> float:
    """Upload ``lib_path`` (from :func:`build_add_module`), run it remotely on random inputs and
    return the largest absolute difference to numpy's ``a + b`` (0.0 when all is right)."""
    import numpy as np
    import tvm
    rng = np.random.default_rng(seed)
    a_np = rng.standard_normal(n).astype("float32")
    b_np = rng.standard_normal(n).astype("float32")
    mod = rpc.upload_module(session, lib_path)
    with rpc.remote_errors("the RPC server failed while running add"):
        dev = session.cpu(0)
        a = tvm.runtime.tensor(a_np, dev)
        b = tvm.runtime.tensor(b_np, dev)
        c = tvm.runtime.tensor(np.zeros(n, "float32"), dev)
        mod["add"](a, b, c)
        out = c.numpy()
    return float(np.max(np.abs(out - (a_np + b_np))))


def time_remote(session, lib, n: int = 1024, number: int = 100, repeat: int = 3) -> float:
    """Mean seconds of one remote ``add`` call (time_evaluator on the server).

    ``lib`` is the path of a library from :func:`build_add_module` (uploaded here) or a
    module :func:`tvmflow.adapter.rpc.upload_module` returned.
    """
    import numpy as np
    import tvm
    mod = lib if hasattr(lib, "time_evaluator") else rpc.upload_module(session, lib)
    with rpc.remote_errors("the RPC server failed while timing add"):
        dev = session.cpu(0)
        a = tvm.runtime.tensor(np.ones(n, "float32"), dev)
        c = tvm.runtime.tensor(np.zeros(n, "float32"), dev)
        ev = mod.time_evaluator("add", dev, number=number, repeat=repeat)
        return float(ev(a, a, c).mean)


def bounded(fn, limit: float) -> tuple[dict, float]:
    """Run ``fn`` in a thread: ``({"value"|"error": ...}, seconds)``; fails the test (instead
    of hanging the suite) when it outlives ``limit``."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc
    th = threading.Thread(target=target, daemon=True)
    t0 = time.monotonic()
    th.start()
    th.join(limit)
    assert not th.is_alive(), f"still waiting after {limit} s: it hangs"
    return box, time.monotonic() - t0
