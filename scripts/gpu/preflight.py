#!/usr/bin/env python3
"""Check, in seconds, each piece the GPU run needs, and stop at the first one missing.

Run by device.sh before any tuning (GPU minutes are too few to find a missing piece 5
minutes into a tune).  In order: nvidia-smi; TVM and its FFI at the carried versions;
TVM's CUDA runtime and device 0 (``tvm.cuda(0).exist``); XGBoost (MetaSchedule's cost
model, one tiny fit); nvcc for tvmflow's cubins and the arch of the target; NVRTC with the
CUDA headers (the tuning builders compile every candidate with it; ``CUDA_PATH`` from
nvcc); ``import_model`` of every variant under this machine's torch; PyTorch on the GPU
(the baselines).  ``--cpu-check``: the stub driver stands in for the GPU (device.sh's CPU
mode): the checks that need a device check that TVM loaded its CUDA runtime instead.

Prints one line per check; exit code 0, or 3 with the missing piece named on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

MISSING = 3


class Missing(Exception):
    pass


def check_nvidia_smi(cpu_check: bool) -> str:
    if cpu_check:
        return "skipped (CPU check: no GPU)"
    smi = shutil.which("nvidia-smi")
    if smi is None:
        raise Missing("nvidia-smi is not on PATH (no NVIDIA driver tools)")
    out = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total",
                          "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    if out.returncode != 0 or not out.stdout.strip():
        raise Missing(f"nvidia-smi failed: {(out.stderr or out.stdout).strip()[:300]}")
    return out.stdout.strip().splitlines()[0]


def check_tvm(manifest: dict | None) -> str:
    import tvm
    import tvm_ffi
    from importlib.metadata import version
    got = {"apache-tvm": version("apache-tvm"), "apache-tvm-ffi": version("apache-tvm-ffi")}
    if manifest:
        want = {w["name"]: w["version"] for w in manifest["wheels"]}
        for name, v in got.items():
            if want.get(name) and want[name] != v:
                raise Missing(f"{name} {v} is imported, the carry holds {want[name]} "
                              f"(PYTHONPATH: {os.environ.get('PYTHONPATH')})")
    return f"tvm {tvm.__version__} ({Path(tvm.__file__).parent}), tvm-ffi {tvm_ffi.__version__}"


def check_device(cpu_check: bool) -> str:
    import tvm
    from tvmflow.adapter.cuda import probe_gpu
    probe = probe_gpu()
    if cpu_check:
        if not tvm.runtime.enabled("cuda"):
            raise Missing("TVM's CUDA runtime did not load under the stub driver "
                          "(is the stub on LD_LIBRARY_PATH?)")
        return f"TVM's CUDA runtime loaded (stub driver: {probe.missing})"
    if not probe.ok:
        raise Missing(probe.missing)
    return f"{probe.name}, {probe.arch}"


def check_xgboost() -> str:
    import numpy as np
    import xgboost as xgb
    x = np.random.default_rng(0).random((64, 4))
    booster = xgb.train({"max_depth": 2, "nthread": 1}, xgb.DMatrix(x, label=x[:, 0]), 2)
    booster.predict(xgb.DMatrix(x))
    return f"xgboost {xgb.__version__} (a tiny fit and predict)"


def check_nvcc(arch: str) -> str:
    from tvmflow.adapter.cuda import check_arch, find_nvcc, nvcc_version
    nvcc = find_nvcc()
    check_arch(nvcc, arch)
    return f"nvcc {nvcc_version(nvcc)} ({nvcc}) compiles {arch}"


def check_nvrtc(arch: str) -> str:
    """The tuning builders' path: TVM's NVRTC compile, headers found through CUDA_PATH."""
    from tvm.support import nvcc as tvm_nvcc
    from tvmflow.adapter.cuda import cuda_home, find_nvcc
    home = cuda_home(find_nvcc())
    if home is None:
        raise Missing("no CUDA toolkit root with include/cuda_runtime.h next to nvcc "
                      "(NVRTC needs the CUDA headers; set CUDA_PATH)")
    os.environ["CUDA_PATH"] = home
    try:
        from cuda.bindings import nvrtc  # noqa: F401
    except ImportError as exc:
        raise Missing(f"cuda-bindings (TVM's NVRTC binding) does not import: {exc}") from None
    src = ('extern "C" __global__ void __launch_bounds__(32) k(float* __restrict__ x) '
           '{ x[threadIdx.x] *= 2.0f; }\n')
    try:
        cubin = tvm_nvcc.compile_cuda(src, target_format="cubin", arch=arch, compiler="nvrtc")
    except Exception as exc:  # noqa: BLE001 - name whatever NVRTC said
        raise Missing(f"NVRTC cannot compile a kernel for {arch} (CUDA_PATH={home}): "
                      f"{str(exc).strip().splitlines()[-1][:300]}") from None
    return f"NVRTC compiled a {arch} cubin ({len(cubin)} bytes), headers from {home}"


def check_models() -> str:
    import torch
    from tvmflow.ir.frontend import import_model
    from tvmflow.spec.registry import list_models
    names = list_models()
    t0 = time.perf_counter()
    for name in names:
        import_model(name, seed=0)
    return (f"import_model of {len(names)} variants under torch {torch.__version__} "
            f"({time.perf_counter() - t0:.1f} s)")


def check_torch_cuda(cpu_check: bool) -> str:
    import torch
    if cpu_check:
        return f"skipped (CPU check; torch {torch.__version__})"
    if not torch.cuda.is_available():
        raise Missing(f"torch {torch.__version__} sees no CUDA GPU (the GPU baselines need it)")
    return f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-check", action="store_true")
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--manifest", default=None)
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    manifest = json.loads(Path(args.manifest).read_text()) if args.manifest else None
    checks = [("nvidia-smi", lambda: check_nvidia_smi(args.cpu_check)),
              ("tvm", lambda: check_tvm(manifest)),
              ("cuda device", lambda: check_device(args.cpu_check)),
              ("xgboost", check_xgboost),
              ("nvcc", lambda: check_nvcc(args.arch)),
              ("nvrtc", lambda: check_nvrtc(args.arch)),
              ("models", check_models),
              ("torch cuda", lambda: check_torch_cuda(args.cpu_check))]
    results = []
    code = 0
    for name, fn in checks:
        t0 = time.perf_counter()
        try:
            what = fn()
            ok = True
        except Missing as exc:
            what, ok = str(exc), False
        except Exception as exc:  # noqa: BLE001 - an import error is a missing piece too
            what, ok = f"{type(exc).__name__}: {str(exc).strip()[:300]}", False
        secs = time.perf_counter() - t0
        results.append({"check": name, "ok": ok, "what": what, "seconds": round(secs, 2)})
        print(f"preflight {'ok  ' if ok else 'FAIL'} {name:<12} {what}  [{secs:.1f} s]",
              flush=True)
        if not ok:
            print(f"Error: preflight: {name}: {what}", file=sys.stderr)
            code = MISSING
            break
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
