"""CUDA device code as compiled machine code (cubin), built with nvcc, no GPU needed.

TVM 0.27's CUDA codegen (``target.build.cuda``) emits a *source* module: the ``.so`` carries
the CUDA C++ text with ``fmt == "cuda"``, and the CUDA runtime compiles it when the module is
loaded (NVRTC, or nvcc through ``tvm_callback_cuda_compile``).  A board would then need a CUDA
compiler at load time, and nothing would check at compile time that the kernels compile for
its architecture.

tvmflow compiles the kernels ahead of time instead.  ``export_library`` packs a module's
imports into one blob (symbol ``__tvm_ffi__library_bin``); :func:`cubin_pack_imports` is an
``fpack_imports`` hook that takes TVM's blob, compiles each CUDA source entry with
``nvcc --cubin -arch=sm_XX`` and writes the entry back as ``fmt == "cubin"`` with the cubin as
its data -- the same layout the CUDA runtime's loader reads for modules built with a GPU
present (fmt string, function-info map, data bytes).  The function-info map is kept byte for
byte.

Blob layout (tvm-ffi library module, all integers little-endian uint64)::

    nbytes | row_ptr: n, n x u64 | child_indices: n, n x u64 |
    repeated: key (len, bytes) [payload (len, bytes) unless key == "_lib"]

and a ``cuda`` payload is ``fmt (len, bytes) | fmap | data (len, bytes)``.

:func:`cuda_images` reads a finished ``.so`` without TVM: every embedded cubin is an ELF file
with ``e_machine == EM_CUDA (190)``; its SM architecture is in ``e_flags``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tvmflow.errors import TvmflowError

EM_CUDA = 190
BLOB_SYMBOL = "__tvm_ffi__library_bin"
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


def compile_cubin(source: str, arch: str, nvcc: str) -> bytes:
    """``nvcc --cubin -arch=<arch>`` on one CUDA source; returns the cubin (an ELF file)."""
    with tempfile.TemporaryDirectory(prefix="tvmflow-nvcc-") as tmp:
        src, out = Path(tmp) / "kernels.cu", Path(tmp) / "kernels.cubin"
        src.write_text(source)
        cmd = [nvcc, "--cubin", "-O3", f"-arch={arch}", "--expt-relaxed-constexpr",
               "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
               "-o", str(out), str(src)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = " | ".join(proc.stderr.strip().splitlines()[-5:])
            raise TvmflowError(f"nvcc failed to compile the CUDA kernels for {arch}: {tail}")
        return out.read_bytes()


# --------------------------------------------------------------------------- blob rewrite


class _Reader:
    def __init__(self, data: bytes, pos: int = 0):
        self.data, self.pos = data, pos

    def u64(self) -> int:
        if self.pos + 8 > len(self.data):
            raise ValueError("truncated blob")
        (value,) = struct.unpack_from("<Q", self.data, self.pos)
        self.pos += 8
        return value

    def raw(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("truncated blob")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def string(self) -> bytes:
        return self.raw(self.u64())


def _u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def _string(value: bytes) -> bytes:
    return _u64(len(value)) + value


def split_blob(blob: bytes) -> tuple[bytes, list[tuple[bytes, bytes | None]]]:
    """(import-tree header, [(key, payload or None)]) of a packed-imports blob."""
    r = _Reader(blob)
    total = r.u64()
    if total != len(blob) - 8:
        raise ValueError(f"blob length field {total} != {len(blob) - 8}")
    start = r.pos
    for _ in range(2):  # row_ptr, child_indices
        r.raw(8 * r.u64())
    header = blob[start:r.pos]
    entries = []
    while r.pos < len(blob):
        key = r.string()
        entries.append((key, None if key == b"_lib" else r.string()))
    return header, entries


def join_blob(header: bytes, entries: list[tuple[bytes, bytes | None]]) -> bytes:
    body = header + b"".join(_string(k) + (b"" if p is None else _string(p)) for k, p in entries)
    return _u64(len(body)) + body


def cuda_payload_to_cubin(payload: bytes, source: str, cubin: bytes) -> bytes:
    """Turn a ``fmt == "cuda"`` payload (fmt, fmap, source) into ``fmt == "cubin"``."""
    r = _Reader(payload)
    fmt = r.string()
    if fmt != b"cuda":
        raise ValueError(f"CUDA module already has fmt {fmt!r}")
    tail = _string(source.encode())
    if not payload.endswith(tail):
        raise ValueError("CUDA payload does not end with its source")
    fmap = payload[r.pos:len(payload) - len(tail)]
    return _string(b"cubin") + fmap + _string(cubin)


def _cuda_sources(module) -> list[str]:
    """Sources of the CUDA modules in ``module``'s import tree, depth-first (blob order)."""
    out, seen = [], set()

    def walk(m):
        for child in m.imports:
            if id(child) in seen:
                continue
            seen.add(id(child))
            if child.kind == "cuda":
                out.append(child.inspect_source())
            walk(child)
    walk(module)
    return out


def _asm_blob(blob_path: Path, symbol: str) -> str:
    """Assembly that defines ``symbol`` as the bytes of ``blob_path`` (``.incbin``).

    Much faster to build than a C array of the same bytes (a cubin is 100 kB and more), and
    the same for x86-64 and aarch64 assemblers.
    """
    return (f'  .section .rodata.{symbol},"a"\n'
            f"  .globl {symbol}\n"
            f"  .type {symbol}, %object\n"
            "  .balign 16\n"
            f"{symbol}:\n"
            f'  .incbin "{blob_path}"\n'
            f"  .size {symbol}, . - {symbol}\n"
            '  .section .note.GNU-stack,"",%progbits\n')


@dataclass
class CubinReport:
    arch: str
    nvcc: str
    nvcc_version: str
    kernels_bytes: int = 0
    modules: int = 0


def cubin_pack_imports(arch: str, nvcc: str, report: CubinReport):
    """An ``export_library(fpack_imports=...)`` hook: TVM's blob with cubins for ``arch``."""
    def pack(module, is_system_lib, symbol_prefix, workspace_dir):
        import tvm_ffi
        if is_system_lib:
            raise TvmflowError("cubin packing does not support system-lib modules")
        tensor = tvm_ffi.get_global_func("runtime.ModulePackImportsToTensor")(module)
        blob = bytes(tensor.numpy().tobytes())
        header, entries = split_blob(blob)
        sources = _cuda_sources(module)
        cuda_idx = [i for i, (k, _) in enumerate(entries) if k == b"cuda"]
        if len(cuda_idx) != len(sources):
            raise RuntimeError(f"{len(cuda_idx)} CUDA blob entries but {len(sources)} CUDA modules")
        for i, src in zip(cuda_idx, sources):
            cubin = compile_cubin(src, arch, nvcc)
            try:
                entries[i] = (b"cuda", cuda_payload_to_cubin(entries[i][1], src, cubin))
            except ValueError as exc:
                raise TvmflowError(f"cannot pack the nvcc cubin: {exc}; TVM compiled the CUDA "
                                   "kernels itself (a CUDA driver is loaded and the build ran "
                                   "outside nvcc_build)") from None
            report.kernels_bytes += len(cubin)
            report.modules += 1
        blob_path = Path(workspace_dir).resolve() / f"{symbol_prefix}devc.bin"
        blob_path.write_bytes(join_blob(header, entries))
        path = blob_path.with_suffix(".S")
        path.write_text(_asm_blob(blob_path, f"{symbol_prefix}{BLOB_SYMBOL}"))
        return str(path)
    return pack


# --------------------------------------------------------------------------- inspection


def _cubin_arch(data: bytes, pos: int) -> str | None:
    """``sm_XY`` (``sm_90a`` for an arch-specific cubin) of the ELF at ``pos`` when it is a
    64-bit CUDA ELF (cubin), else None.

    The SM number is in ``e_flags``; the ``a`` of an arch-specific cubin is not (sm_90 and
    sm_90a cubins carry the same flags), so it is read from the ptxas command line that
    nvcc records in the cubin's ``.note.nv.tkinfo`` (``-arch sm_90a``).
    """
    if data[pos + 4] != 2 or struct.unpack_from("<H", data, pos + 18)[0] != EM_CUDA:
        return None
    flags = struct.unpack_from("<I", data, pos + 48)[0]
    abi_version = data[pos + 8]
    sm = (flags >> 8) & 0xFF if abi_version >= 8 else flags & 0xFF  # CUDA 12.8+ moved the field
    shoff, = struct.unpack_from("<Q", data, pos + 40)
    shentsize, shnum = struct.unpack_from("<HH", data, pos + 58)
    end = min(len(data), pos + shoff + shentsize * shnum)
    match = re.search(rb"-arch sm_(\d+)([a-z]?)\b", data[pos:end])
    if match and int(match.group(1)) == sm:
        return f"sm_{sm}{match.group(2).decode()}"
    return f"sm_{sm}"


def cuda_images(path: str | Path) -> dict:
    """What CUDA code a compiled ``.so`` embeds (pure file parsing, no TVM, no GPU).

    Returns ``{"cubin": [sm_XX per embedded cubin], "ptx": bool, "source": bool}``.
    """
    data = Path(path).read_bytes()
    archs = []
    pos = data.find(b"\x7fELF", 1)
    while pos != -1 and pos + 52 <= len(data):
        arch = _cubin_arch(data, pos)
        if arch:
            archs.append(arch)
        pos = data.find(b"\x7fELF", pos + 1)
    return {"cubin": archs,
            "ptx": bool(re.search(rb"\.target\s+sm_\d+", data)),
            "source": b'extern "C" __global__' in data}


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
