"""The CUDA toolchain and the GPU: nvcc (found, its version and archs, the toolkit root
NVRTC needs), :func:`nvcc_build` (keeps a build on the nvcc path), :func:`probe_gpu` (what
this machine has for running CUDA code) and :func:`cubin_runs_on`.

The cubins themselves -- compiled with nvcc, packed into TVM's library blob, read back from
a ``.so`` -- are :mod:`.cubin`'s; :func:`compile_cubin`, :class:`CubinReport`,
:func:`cubin_pack_imports` and :func:`cuda_images` are importable from here too.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tvmflow.adapter.cubin import CubinReport, compile_cubin, cubin_pack_imports, cuda_images
from tvmflow.errors import TvmflowError

__all__ = ["CubinReport", "GpuProbe", "check_arch", "compile_cubin", "cubin_pack_imports",
           "cubin_runs_on", "cuda_home", "cuda_images", "find_nvcc", "gpu_arch", "has_gpu",
           "nvcc_archs", "nvcc_build", "nvcc_version", "probe_gpu"]

NVCC_HINT = ("install the CUDA toolkit (NVIDIA's cuda-toolkit-13-0 package, or Debian's "
             "nvidia-cuda-toolkit), or point CUDA_HOME at it")


# --------------------------------------------------------------------------- nvcc


def find_nvcc() -> str:
    """``$TVMFLOW_NVCC``, else nvcc from PATH, $CUDA_HOME/bin, the newest /usr/local/cuda*/bin."""
    chosen = os.environ.get("TVMFLOW_NVCC")
    if chosen:
        if Path(chosen).is_file() and os.access(chosen, os.X_OK):
            return chosen
        raise TvmflowError(f"nvcc not found at TVMFLOW_NVCC={chosen}; it is needed to compile "
                           "CUDA kernels into a cubin", hint=NVCC_HINT)
    found = shutil.which("nvcc")
    if found:
        return found
    candidates = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(Path(os.environ[var]) / "bin" / "nvcc")
    candidates += [Path(p) for p in sorted(glob.glob("/usr/local/cuda*/bin/nvcc"), reverse=True)]
    for cand in candidates:
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    raise TvmflowError("nvcc not found (looked in PATH, $CUDA_HOME/bin and /usr/local/cuda*/bin); "
                       "it is needed to compile CUDA kernels into a cubin", hint=NVCC_HINT)


def nvcc_version(nvcc: str) -> str:
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"release ([\d.]+)", out)
    return match.group(1) if match else "unknown"


def nvcc_archs(nvcc: str) -> list[str]:
    """The sm_XX values this nvcc can generate code for (``--list-gpu-code``)."""
    out = subprocess.run([nvcc, "--list-gpu-code"], capture_output=True, text=True)
    return out.stdout.split() if out.returncode == 0 else []


def check_arch(nvcc: str, arch: str) -> None:
    """Refuse an arch this nvcc cannot generate code for.

    ``nvcc --list-gpu-code`` lists only the portable archs (sm_90, not sm_90a); an
    arch-specific one (``sm_90a``, ``sm_100a``: wgmma and the other features of that one chip)
    is accepted when its base arch is listed and nvcc compiles a kernel for it.
    """
    archs = nvcc_archs(nvcc)
    if not archs or arch in archs:
        return
    base = arch[:-1] if arch[-1].isalpha() else None
    if base in archs and _nvcc_accepts(nvcc, arch):
        return
    supported = ", ".join(archs)
    if base in archs:
        raise TvmflowError(f"nvcc {nvcc_version(nvcc)} ({nvcc}) lists {base} but does not compile "
                           f"for the arch-specific {arch}; it supports {supported}",
                           hint=f"use {base}: its cubin runs on every {base} GPU")
    raise TvmflowError(f"nvcc {nvcc_version(nvcc)} ({nvcc}) cannot generate code for {arch}; "
                       f"it supports {supported}")


def _nvcc_accepts(nvcc: str, arch: str) -> bool:
    """Whether ``nvcc -arch=<arch>`` compiles an empty kernel (a second or two)."""
    try:
        compile_cubin('extern "C" __global__ void tvmflow_probe() {}\n', arch, nvcc)
        return True
    except TvmflowError:
        return False


def cuda_home(nvcc: str) -> str | None:
    """The CUDA toolkit root (the folder with ``include/cuda_runtime.h``) nvcc belongs to.

    NVRTC needs it for the CUDA headers (TVM finds it through ``CUDA_PATH``, else two folders
    above ``which nvcc``, which is wrong when nvcc is a wrapper script in /usr/local/bin).
    nvcc itself says where it lives: ``nvcc --dryrun`` prints ``TOP=<root>/bin/..``.
    """
    for var in ("CUDA_PATH", "CUDA_HOME"):
        root = os.environ.get(var)
        if root and _has_headers(Path(root)):
            return str(Path(root).resolve())
    candidates = [Path(nvcc).resolve().parent.parent]
    try:
        out = subprocess.run([nvcc, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
                             capture_output=True, text=True, timeout=30)
        match = re.search(r"TOP=(\S+)", out.stderr + out.stdout)
        if match:
            candidates.insert(0, Path(match.group(1).strip('"')))
    except (OSError, subprocess.TimeoutExpired):
        pass
    for root in candidates:
        if _has_headers(root):
            return str(root.resolve())
    return None


def _has_headers(root: Path) -> bool:
    return any((root / sub / "cuda_runtime.h").is_file()
               for sub in ("include", "targets/x86_64-linux/include", "targets/sbsa-linux/include"))



# --------------------------------------------------------------------------- the GPU


@dataclass
class GpuProbe:
    """What this machine has for running CUDA code, and the first piece missing."""

    ok: bool
    arch: str | None = None          # sm_XY of GPU 0
    name: str | None = None          # the driver's name for GPU 0
    missing: str | None = None       # why not: the first missing piece, named

    def to_json(self) -> dict:
        return dict(ok=self.ok, arch=self.arch, name=self.name, missing=self.missing)


def _driver_error(lib, code: int) -> str:
    import ctypes
    text = ctypes.c_char_p()
    if lib.cuGetErrorName(code, ctypes.byref(text)) == 0 and text.value:
        return text.value.decode()
    return f"error {code}"


def probe_gpu() -> GpuProbe:
    """Check, in order, each piece a CUDA run needs, and name the first one missing.

    The NVIDIA driver library (``libcuda.so.1``), a device it reports (``cuInit``,
    ``cuDeviceGetCount``), TVM's CUDA runtime (``libtvm_runtime_cuda.so`` and the CUDA runtime
    library it links, ``libcudart``), and TVM's device 0.  Never raises.
    """
    import ctypes
    try:
        drv = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return GpuProbe(False, missing="the NVIDIA driver library libcuda.so.1 is not on the "
                                       "loader path (no NVIDIA driver installed here)")
    try:
        rc = drv.cuInit(0)
        if rc != 0:
            return GpuProbe(False, missing=f"the NVIDIA driver found no usable GPU (cuInit: "
                                           f"{_driver_error(drv, rc)})")
        count = ctypes.c_int(0)
        rc = drv.cuDeviceGetCount(ctypes.byref(count))
        if rc != 0 or count.value < 1:
            return GpuProbe(False, missing="the NVIDIA driver reports no CUDA device"
                                           + (f" ({_driver_error(drv, rc)})" if rc else ""))
    except AttributeError as exc:     # a library named libcuda.so.1 that is not the driver
        return GpuProbe(False, missing=f"libcuda.so.1 is not a CUDA driver ({exc})")
    import tvm
    lib = Path(tvm.__file__).parent / "lib" / "libtvm_runtime_cuda.so"
    if lib.is_file():
        try:
            ctypes.CDLL(str(lib))
        except OSError as exc:
            return GpuProbe(False, missing=f"TVM's CUDA runtime does not load: {exc}")
    if not tvm.runtime.enabled("cuda"):
        return GpuProbe(False, missing=f"this TVM ({tvm.__version__}) has no CUDA runtime")
    try:
        dev = tvm.cuda(0)
        if not dev.exist:
            return GpuProbe(False, missing="TVM sees no CUDA device 0")
        major, minor = str(dev.compute_version).split(".")[:2]
        return GpuProbe(True, arch=f"sm_{major}{minor}", name=str(dev.device_name))
    except Exception as exc:  # noqa: BLE001 - the probe reports, it never raises
        return GpuProbe(False, missing=f"TVM cannot open CUDA device 0: "
                                       f"{str(exc).strip().splitlines()[-1]}")


def has_gpu() -> bool:
    """Whether a CUDA GPU is usable here (see :func:`probe_gpu` for why not)."""
    return probe_gpu().ok


def gpu_arch() -> str | None:
    """``sm_XY`` of local GPU 0, None without a usable GPU."""
    return probe_gpu().arch


@contextlib.contextmanager
def nvcc_build(target):
    """Keep a CUDA build on the nvcc path (:func:`cubin_pack_imports`) while a driver is here;
    nothing for a non-CUDA ``target`` (a ``tvm.target.Target``).

    With a CUDA driver present, ``tvm.compile`` compiles the kernels itself through NVRTC
    (for the arch of the local GPU, e.g. sm_90a for an sm_90 target) and packs a cubin, which
    the nvcc rewrite then finds already there.  ``TVM_COMPILE_FORCE_FALLBACK=1`` makes TVM
    keep the CUDA source as it does without a driver.  Set only around the build and restored
    after, so the tuning builders (which do want NVRTC) are untouched.
    """
    if target.kind.name != "cuda":
        yield
        return
    name = "TVM_COMPILE_FORCE_FALLBACK"
    saved = os.environ.get(name)
    os.environ[name] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


def cubin_runs_on(cubin_arch: str, gpu: str) -> bool:
    """A cubin for sm_XY runs on GPUs of the same major version with minor >= Y."""
    a, g = re.fullmatch(r"sm_(\d+)(\d)[a-z]?", cubin_arch), re.fullmatch(r"sm_(\d+)(\d)", gpu)
    if not a or not g:
        return cubin_arch == gpu
    return a.group(1) == g.group(1) and int(g.group(2)) >= int(a.group(2)) and \
        (not cubin_arch[-1].isalpha() or cubin_arch[:-1] == gpu)
