"""CUDA device code as compiled machine code (cubin), built with nvcc, no GPU needed.

TVM 0.27's CUDA codegen (``target.build.cuda``) emits a *source* module: the ``.so`` carries
the CUDA C++ text with ``fmt == "cuda"``, and the CUDA runtime compiles it when the module is
loaded (NVRTC, or nvcc through ``tvm_callback_cuda_compile``).  A board would then need a CUDA
compiler at load time, and nothing would check at compile time that the kernels compile for
its architecture.

tvmflow compiles the kernels ahead of time instead.  ``export_library`` packs a module's
imports into one blob (symbol ``__tvm_ffi__library_bin``); :func:`cubin_pack_imports` is an
``fpack_imports`` hook that takes TVM's blob, compiles each CUDA source entry with
``nvcc --cubin -arch=sm_XX`` (:func:`compile_cubin`) and writes the entry back as
``fmt == "cubin"`` with the cubin as its data -- the same layout the CUDA runtime's loader
reads for modules built with a GPU present (fmt string, function-info map, data bytes).  The
function-info map is kept byte for byte.

Blob layout (tvm-ffi library module, all integers little-endian uint64)::

    nbytes | row_ptr: n, n x u64 | child_indices: n, n x u64 |
    repeated: key (len, bytes) [payload (len, bytes) unless key == "_lib"]

and a ``cuda`` payload is ``fmt (len, bytes) | fmap | data (len, bytes)``.

:func:`cuda_images` reads a finished ``.so`` without TVM: every embedded cubin is an ELF file
with ``e_machine == EM_CUDA (190)``; its SM architecture is in ``e_flags``.  Finding nvcc,
the archs it supports and the GPU here is :mod:`.cuda`'s.
"""

from __future__ import annotations

import re
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tvmflow.errors import TvmflowError

EM_CUDA = 190
BLOB_SYMBOL = "__tvm_ffi__library_bin"


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
