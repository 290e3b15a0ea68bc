"""Build a Relax module for a target and write it as a shared library (running it is
:mod:`tvmflow.adapter.runtime`'s job)."""

from __future__ import annotations


def build(mod, target):
    """Compile with TVM's default pipeline (no tuning database); CUDA kernels stay source for
    the nvcc cubin step of :func:`export_library` (:func:`.cuda.nvcc_build`)."""
    import tvm
    from tvmflow.adapter.cuda import nvcc_build
    tgt = target if isinstance(target, tvm.target.Target) else tvm.target.Target(target)
    with nvcc_build(tgt):
        return tvm.compile(mod, target=tgt)


def export_library(executable, path, *, cross_compiler: str | None = None,
                   cuda_arch: str | None = None, nvcc: str | None = None) -> dict:
    """Write ``executable`` as a shared library at ``path``.

    ``cross_compiler`` (e.g. ``aarch64-linux-gnu-g++``) links the library for another CPU
    through ``tvm.support.cc.cross_compiler``.  With ``cuda_arch`` (``sm_87``...) the CUDA
    kernels are compiled by ``nvcc`` into a cubin for that architecture and packed into the
    library in place of their source (see :mod:`tvmflow.adapter.cuda`).  Returns what was done
    (``{"linker": the compiler that linked it, "cuda": {...}}`` for CUDA builds).
    """
    from tvm.support import cc
    from tvmflow.adapter.cuda import CubinReport, cubin_pack_imports, nvcc_version
    kwargs: dict = {}
    if cross_compiler:
        kwargs["fcompile"] = cc.cross_compiler(cross_compiler)
    info: dict = {}
    if cuda_arch:
        report = CubinReport(cuda_arch, nvcc, nvcc_version(nvcc))
        kwargs["fpack_imports"] = cubin_pack_imports(cuda_arch, nvcc, report)
    lib = executable.mod if hasattr(executable, "mod") else executable
    lib.export_library(str(path), **kwargs)
    info["linker"] = cross_compiler or cc.get_cc()
    if cuda_arch:
        info["cuda"] = dict(code="cubin", archs=[cuda_arch], nvcc=report.nvcc,
                            nvcc_version=report.nvcc_version, cuda_modules=report.modules,
                            cubin_bytes=report.kernels_bytes)
    return info

