"""``tvmflow run``: load a compiled module on this machine and run it once.

The sidecar says what the module needs: the CPU architecture of its code (x86-64 or aarch64),
a CUDA GPU for CUDA targets, and for x86 modules the vector extensions of the CPU they were
built for (a host module is built for the exact CPU it was compiled on, e.g. ``znver2`` or
``emeraldrapids``; one with AVX-512 code is refused on a CPU without AVX-512).  A module this
machine cannot run is refused with the mismatch named, before TVM tries to load it.  The
default input is the variant's seeded example input (the sidecar's seed), the one the
compile-time reference used.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tvmflow.errors import TvmflowError
from tvmflow.artifact.package import Package
from tvmflow.files import check_overwrite, write_atomic

_MACHINES = {"x86_64": ("x86_64", "amd64"), "aarch64": ("aarch64", "arm64")}


def missing_cpu_features(mcpu: str, flags: set[str], mattr=()) -> list[str]:
    """The x86 extensions code built for ``mcpu`` (less those ``mattr`` turns off) may use and
    a CPU with ``flags`` lacks."""
    from tvmflow.adapter.target import cpu_features
    from tvmflow.target.cpus import absent_x86_features
    off = {str(a)[1:] for a in mattr if str(a).startswith("-")}
    return [f for f in absent_x86_features(cpu_features(mcpu), flags) if f not in off]


@dataclass
class RunResult:
    package: Package
    input_source: str
    output: np.ndarray
    saved: Path | None = None
    threads: int | None = None         # TVM's thread count in this process, as TVM reports it

    def top(self, k: int = 5) -> list[tuple[int, float]]:
        flat = self.output.reshape(self.output.shape[0], -1)[0]
        idx = np.argsort(-flat)[:k]
        return [(int(i), float(flat[i])) for i in idx]


def local_machine() -> str:
    return platform.machine().lower()


def mismatches(pkg: Package) -> list[str]:
    """Why this machine cannot run ``pkg`` (empty when it can)."""
    from tvmflow.target.presets import _cpu_flags
    problems = []
    arch = pkg.cpu_triple.split("-")[0]
    here = local_machine()
    if here not in _MACHINES.get(arch, (arch,)):
        problems.append(f"its code is for {arch} ({pkg.cpu_triple}) and this machine is {here}")
    target = pkg.sidecar.target.target or {}
    mcpu = target.get("mcpu")
    if pkg.device == "cpu" and arch == "x86_64" and mcpu and not problems:
        flags = _cpu_flags()
        lacks = missing_cpu_features(str(mcpu), flags, target.get("mattr") or ()) if flags else []
        if lacks:
            what = ", ".join(lacks[:5]) + (", ..." if len(lacks) > 5 else "")
            if "avx512f" in lacks:
                what = f"AVX-512 ({what})"
            problems.append(f"it was built for {mcpu} and this CPU lacks {what}")
    if pkg.device == "cuda":
        from tvmflow.adapter.cuda import cubin_runs_on, probe_gpu
        archs = [str(a) for a in ((pkg.cuda and pkg.cuda.archs) or [target.get("arch")])]
        probe = probe_gpu()
        gpu = probe.arch
        if gpu is None:
            problems.append(f"it needs a CUDA GPU ({', '.join(archs)}) and this machine has none "
                            f"usable ({probe.missing})")
        elif not any(cubin_runs_on(a, gpu) for a in archs):
            problems.append(f"its CUDA code is a cubin for {', '.join(archs)} and this GPU is {gpu}")
    return problems


def check_runnable(pkg: Package) -> None:
    problems = mismatches(pkg)
    if problems:
        raise TvmflowError(f"cannot run {pkg.path.name} (target {pkg.target_name}) here: "
                           + "; ".join(problems),
                           hint=f"run it on a {pkg.target_name} board, e.g. through TVM RPC")


def load_input(pkg: Package, path: str | Path | None) -> tuple[np.ndarray, str]:
    """The input array and where it came from (a .npy file, or the sidecar's seed)."""
    if path is None:
        from tvmflow.spec.nin import example_input
        from tvmflow.spec.registry import get_spec
        spec = get_spec(pkg.variant)
        x = example_input(spec, pkg.seed).numpy()
        return x.astype(pkg.input_dtype), f"example input, seed {pkg.seed}"
    path = Path(path)
    try:
        x = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise TvmflowError(f"input file {path} does not exist") from None
    except (ValueError, OSError) as exc:
        raise TvmflowError(f"input file {path} is not a .npy array: {exc}") from None
    if tuple(x.shape) != pkg.input_shape:
        raise TvmflowError(f"input {path} has shape {tuple(x.shape)}, the module expects "
                           f"{pkg.input_shape}")
    if str(x.dtype) != pkg.input_dtype:
        raise TvmflowError(f"input {path} has dtype {x.dtype}, the module expects {pkg.input_dtype}")
    return x, str(path)


def _threads_for(pkg: Package, threads: int | None) -> int:
    """``threads``, else TVM_NUM_THREADS, else the module's target preset's ``num-cores``
    (detected here for ``host``; the sidecar's target when the preset is gone)."""
    from tvmflow.target.presets import get_target
    from tvmflow.threads import resolve
    try:
        preset = get_target(pkg.target_name)
    except TvmflowError:
        from types import SimpleNamespace
        preset = SimpleNamespace(target=pkg.sidecar.target.target or {}, host=pkg.sidecar.target.host)
    return resolve(preset, threads)


def run(module: str | Path, input: str | Path | None = None,
        output: str | Path | None = None, *, threads: int | None = None,
        force: bool = False) -> RunResult:
    """Run the compiled ``module`` once on this machine; save the output to ``output`` (.npy).

    ``threads``: TVM's thread count (default ``TVM_NUM_THREADS``, else the target's
    ``num-cores``).  ``force``: replace an existing ``output`` file.
    """
    from tvmflow.adapter.runtime import local_session
    from tvmflow.threads import scoped
    pkg = Package.load(module)
    saved = None
    if output is not None:
        saved = Path(output)
        if saved.suffix != ".npy":
            raise TvmflowError(f"output {output} must end in .npy")
        if not saved.parent.is_dir():
            raise TvmflowError(f"output directory {saved.parent} does not exist")
        check_overwrite(saved, ours=False, force=force, what="output", why=None)
    check_runnable(pkg)
    n = _threads_for(pkg, threads)
    x, source = load_input(pkg, input)
    with scoped(n):
        session = local_session("cuda" if pkg.device == "cuda" else "cpu")
        measured = session.use_threads(n)
        y = session.load(pkg.path).infer(x)
    if saved is not None:
        import io
        buf = io.BytesIO()
        np.save(buf, y)
        try:
            write_atomic(saved, buf.getvalue())
        except OSError as exc:
            raise TvmflowError(f"cannot write {saved}: {exc.strerror or exc}") from None
    return RunResult(pkg, source, y, saved, measured)
