"""``tvmflow compile``: one variant, one target preset -> a deployable ``.so`` + JSON sidecar.

Steps: load the preset (and check its toolchain: the cross compiler, nvcc for CUDA) and the
output directory *before* the slow part; import the variant (seeded or checkpoint weights);
build it through the shared pipeline (:mod:`tvmflow.adapter.pipeline`) with the target's
schedule database when there is one (:mod:`tvmflow.schedules`); export the library -- linked
by the cross compiler for aarch64 boards, with the CUDA kernels compiled to a cubin for the
preset's SM arch -- to a temp file in the output directory and rename it into place, then the
sidecar the same way.  An interrupted compile leaves the previous module (or nothing), never a
half-written one.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from tvmflow.errors import TvmflowError
from tvmflow.workspace import Workspace
from tvmflow.artifact.package import (Package, _jsonable, schedule_record, sha256_file, sidecar_path,
                      tvmflow_version, umask_mode)
from tvmflow.target.presets import TargetPreset, find_cross_compiler, get_target



def artifacts_dir() -> Path:
    """Where modules go by default: the workspace's ``artifacts/``."""
    return Workspace.current().artifacts


def default_output(target: str, variant: str) -> Path:
    return artifacts_dir() / target / f"{variant}.so"


def resolve_output(output: str | Path | None, target: str, variant: str) -> Path:
    """``-o``: a ``.so`` path, or a directory (then ``DIR/<variant>.so``); None: the default."""
    if output is None:
        return default_output(target, variant)
    path = Path(output)
    if path.is_dir() or str(output).endswith(os.sep):
        return path / f"{variant}.so"
    if path.suffix != ".so":
        raise TvmflowError(f"output {output} must end in .so (its sidecar is written next to it "
                           "as .json)")
    return path


def check_output_dir(directory: Path) -> None:
    """Create ``directory`` and prove it is writable (a real write, not a permission guess)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TvmflowError(f"cannot create output directory {directory}: "
                           f"{exc.strerror or exc}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".tvmflow-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise TvmflowError(f"output directory {directory} is not writable: "
                           f"{exc.strerror or exc}") from None


def schedule_database(preset: TargetPreset, variant: str, *, load: bool = True):
    """``(database or None, info or None)`` from :mod:`tvmflow.schedules` for this target.

    ``info`` has at least ``path`` and ``sha256``, and the CPU the set was tuned on
    (``cpu``, ``running_on``, ``match``: ``"exact"``, or ``"nearest"`` with a ``note`` such as
    "tuned on emeraldrapids, running on znver2" when no set was tuned on this CPU); a
    database that is corrupt or was tuned for another target kind / triple / CUDA arch or
    variant is refused there with a TvmflowError.  Without a database for the pair the build
    uses default schedules.
    """
    from tvmflow.tuning import schedules
    if not load:  # a staleness check: meta.json and the database's sha256, no TVM
        info = schedules.database_info(preset, variant, check=False)
        return None, (info if info and info.get("sha256") else None)
    database, info = schedules.load_for_compile(preset, variant)
    return database, (info if info and info.get("sha256") else None)


def _schedules_line(info: dict[str, Any]) -> str:
    """The terminal line naming the schedule set, and the CPU it was tuned on when that is
    not this one."""
    if info.get("note"):
        return (f"schedules: {info['path']} ({info['note']})\n"
                f"  no set was tuned on {info['running_on']}: using the nearest one "
                f"({info.get('why')}), its schedules re-applied for {info['running_on']}; "
                f"`tvmflow tune --adapt` re-measures them here")
    if info.get("dry_run"):
        return (f"schedules: {info['path']} (Warning: a dry run, its run times made up: the "
                "schedules are valid but were never measured)")
    return f"schedules: {info['path']}"


def _build(model, preset: TargetPreset, database, info, cuda_graph: bool = False):
    """Build through the shared tune/compile pipeline: the log's pipeline options, or the
    target's default ones for the model when there is no log (``pipeline.default_options``)."""
    from tvmflow.adapter import pipeline
    target = preset.tvm_target()
    saved = (info or {}).get("pipeline")
    options = (pipeline.PipelineOptions.from_json(saved) if saved
               else pipeline.default_options(target, model.mod))
    executable, coverage = pipeline.build(model.mod, target, database, options=options,
                                          cuda_graph=cuda_graph)
    coverage = dict(coverage)
    coverage["pipeline"] = options.to_json()
    return executable, coverage


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from tvmflow.adapter import ffi_version, tvm_version
    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = "unknown"
    return dict(tvmflow=tvmflow_version(), tvm=tvm_version(), tvm_ffi=ffi_version(),
                torch=torch_version, python=platform.python_version())


def _weights(model) -> dict[str, Any]:
    ckpt = model.spec.checkpoint
    if ckpt:
        out = {"kind": "checkpoint", "path": str(ckpt)}
        if Path(ckpt).is_file():
            out["sha256"] = sha256_file(ckpt)
        return out
    return {"kind": "random", "seed": model.seed}


def compile(variant: str, target: str | TargetPreset, output: str | Path | None = None,
            seed: int = 0, schedules: bool = True,
            on_status: Callable[[str], None] | None = None, model=None,
            cuda_graph: bool = False) -> Package:
    """Compile ``variant`` for ``target`` into a ``.so`` + sidecar; returns the Package.

    ``schedules=False`` ignores any tuned database (default schedules everywhere).
    ``cuda_graph`` (CUDA targets): the module replays its kernel launches as one CUDA graph
    (recorded in the sidecar's ``cuda`` entry).
    ``on_status`` receives progress lines for the terminal.  ``model``: the variant already
    imported by :func:`tvmflow.ir.frontend.import_model` with this ``seed`` (saves the import
    when one variant is compiled for several targets; its module is not modified).
    """
    from tvmflow.adapter.build import export_library
    from tvmflow.ir.frontend import import_model
    from tvmflow.spec.registry import get_spec

    say = on_status or (lambda _msg: None)
    # everything that can fail fast, before the slow import and build
    spec = get_spec(variant)
    path = resolve_output(output, target.name if isinstance(target, TargetPreset) else target,
                          spec.name)
    preset = target if isinstance(target, TargetPreset) else get_target(target)
    check_cuda_graph(preset, cuda_graph)
    cross = find_cross_compiler(preset)
    nvcc = None
    if preset.is_cuda:
        from tvmflow.adapter.cuda import check_arch, find_nvcc
        nvcc = find_nvcc()
        check_arch(nvcc, preset.arch)
    check_output_dir(path.parent)
    database, info = schedule_database(preset, spec.name) if schedules else (None, None)
    say(_schedules_line(info) if info else
        "schedules: none (default schedules" + (", dlight GPU rules)" if preset.is_cuda else ")"))

    t0 = time.perf_counter()
    if model is None:
        model = import_model(spec, seed=seed)
    elif model.spec.cfg() != spec.cfg() or model.seed != seed:
        raise TvmflowError(f"the imported model is {model.spec.name} (seed {model.seed}), not "
                           f"{spec.name} (seed {seed})")
    executable, coverage = _build(model, preset, database, info, cuda_graph=cuda_graph)
    t_build = time.perf_counter() - t0

    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".so", dir=path.parent)
    os.close(fd)
    try:
        exported = export_library(executable, tmp, cross_compiler=cross,
                                  cuda_arch=preset.arch if preset.is_cuda else None, nvcc=nvcc)
        if preset.is_cuda:
            from tvmflow.adapter.cuda import cuda_images
            images = cuda_images(tmp)
            if preset.arch not in images["cubin"] or images["ptx"] or images["source"]:
                raise TvmflowError(f"the CUDA module for {preset.arch} does not hold only a cubin "
                                   f"for it: {images}")
            exported["cuda"]["embedded"] = images
        digest = sha256_file(tmp)
        size = os.path.getsize(tmp)
        os.chmod(tmp, umask_mode(0o755))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

    sidecar = {
        "format": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "variant": {"name": spec.name, "cfg": _jsonable(spec.cfg())},
        "weights": _weights(model),
        "frontend": model.frontend,
        "target": _jsonable(preset.to_json()),
        "cross_compiler": cross,
        "input": {"name": model.input_name, "shape": list(model.input_shape),
                  "dtype": model.input_dtype, "seed": seed},
        "versions": _versions(),
        "schedules": schedule_record(info),
        "coverage": coverage or {"tasks": None, "tuned": 0, "default": None},
        "module": {"file": path.name, "sha256": digest, "bytes": size,
                   "build_seconds": round(t_build, 2)},
    }
    if "cuda" in exported:
        sidecar["cuda"] = dict(exported["cuda"], cuda_graph=bool(cuda_graph))
    pkg = Package(path, sidecar)
    pkg.write_sidecar()
    return pkg


def compile_if_stale(variant: str, target: str | TargetPreset, output: str | Path | None = None,
                     seed: int = 0, schedules: bool = True, force: bool = False,
                     on_status: Callable[[str], None] | None = None,
                     cuda_graph: bool = False) -> tuple[Package, str | None]:
    """Reuse the module at the output path when it is up to date, else compile it.

    Returns ``(package, why it was compiled)``; the reason is None when the existing module
    was reused.  Up to date: sha256, tvmflow version, variant cfg, target preset, schedule
    database and seed all match (see :func:`tvmflow.artifact.package.stale_reason`).
    """
    from tvmflow.artifact.package import stale_reason
    from tvmflow.spec.registry import get_spec
    preset = target if isinstance(target, TargetPreset) else get_target(target)
    spec = get_spec(variant)
    path = resolve_output(output, preset.name, spec.name)
    if force:
        reason = "--force"
    elif not path.exists():
        reason = "not compiled yet"
    else:
        info = None
        if schedules:
            _, info = schedule_database(preset, spec.name, load=False)
        reason = stale_reason(path, schedules_info=info, spec=spec)
        if reason is None:
            pkg = Package.load(path)
            if pkg.seed != seed:
                reason = f"compiled with seed {pkg.seed}, asked for {seed}"
            elif not schedules and pkg.sidecar.get("schedules"):
                reason = "compiled with tuned schedules, asked for none"
            elif pkg.cuda_graph != bool(cuda_graph):
                reason = cuda_graph_reason(pkg.cuda_graph)
            else:
                return pkg, None
    return compile(spec.name, preset, path, seed=seed, schedules=schedules,
                   on_status=on_status, cuda_graph=cuda_graph), reason


def check_cuda_graph(preset: TargetPreset, cuda_graph: bool) -> None:
    """``--cuda-graph`` (compile, bench, compare) is for CUDA targets only."""
    if cuda_graph and not preset.is_cuda:
        raise TvmflowError(f"--cuda-graph needs a CUDA target; {preset.name} is "
                           f"{preset.target.get('kind')}")


def cuda_graph_reason(compiled_with: bool) -> str:
    return ("compiled with CUDA graphs, asked for none" if compiled_with
            else "compiled without CUDA graphs, asked for --cuda-graph")


__all__ = ["compile", "compile_if_stale", "default_output", "resolve_output", "schedule_database", "sidecar_path"]
