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
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from tvmflow.artifact.package import Package, owned_by_tvmflow, sidecar_path, tvmflow_version
from tvmflow.artifact.sidecar import (SIDECAR_FORMAT, BuildPart, CoveragePart, CudaPart,
                                      InputPart, ModulePart, SchedulesPart, Sidecar, TargetPart,
                                      VariantPart, VersionsPart, WeightsPart, jsonable)
from tvmflow.errors import TvmflowError
from tvmflow.files import atomic_path, check_overwrite, sha256_file
from tvmflow.target.presets import TargetPreset, find_cross_compiler, get_target
from tvmflow.workspace import Workspace, check_writable


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
    """``(database or None, info or None)`` from :mod:`tvmflow.tuning.schedules` for this target.

    ``info`` has at least ``path`` and ``sha256``, and the CPU the set was tuned on
    (``cpu``, ``running_on``, ``match``: ``"exact"``, or ``"nearest"`` with a ``note`` such as
    "tuned on emeraldrapids, running on znver2" when no set was tuned on this CPU); a
    database that is corrupt or was tuned for another target kind / triple / CUDA arch or
    variant is refused there with a TvmflowError.  Without a database for the pair the build
    uses default schedules.  ``load=False``: the info only (no TVM, the database not opened).
    """
    from tvmflow.tuning import schedules
    if load:
        database, info = schedules.load_for_compile(preset, variant)
    else:   # a staleness check: meta.json and the database's sha256, no TVM
        database, info = None, schedules.database_info(preset, variant, check=False)
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
    coverage = CoveragePart.from_json(dict(coverage, pipeline=options.to_json()))
    return executable, coverage


def _versions() -> VersionsPart:
    from importlib.metadata import PackageNotFoundError, version

    from tvmflow.adapter import ffi_version, tvm_version
    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = "unknown"
    return VersionsPart(tvmflow=tvmflow_version(), tvm=tvm_version(), tvm_ffi=ffi_version(),
                        torch=torch_version, python=platform.python_version())


def _weights(model) -> WeightsPart:
    ckpt = model.spec.checkpoint
    if ckpt:
        return WeightsPart("checkpoint", path=str(ckpt),
                           sha256=sha256_file(ckpt) if Path(ckpt).is_file() else None)
    return WeightsPart("random", seed=model.seed)



def _toolchain(preset: TargetPreset) -> tuple[str | None, str | None]:
    """``(cross compiler, nvcc)`` the preset needs, checked before the slow part."""
    cross = find_cross_compiler(preset)
    nvcc = None
    if preset.is_cuda:
        from tvmflow.adapter.cuda import check_arch, find_nvcc
        nvcc = find_nvcc()
        check_arch(nvcc, preset.arch)
    return cross, nvcc


def check_output(path: Path, force: bool = False) -> None:
    """The output may be written: not in the shipped data, its directory writable, and any
    ``.so``/``.json`` already there tvmflow's own (else only with ``force``)."""
    check_writable(path)
    check_output_dir(path.parent)
    ours, why = owned_by_tvmflow(path)
    for existing in (path, sidecar_path(path)):
        check_overwrite(existing, ours=ours, force=force, what="output", why=why)


def _linker_version(linker: str | None) -> str | None:
    if not linker:
        return None
    try:
        out = subprocess.run([linker, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.splitlines() or [None])[0]


def _export(executable, path: Path, preset: TargetPreset, cross: str | None,
            nvcc: str | None) -> tuple[ModulePart, BuildPart, CudaPart | None]:
    """Link the library to a temp file next to ``path`` and rename it into place: an
    interrupted compile leaves the previous module (or nothing), never half of one."""
    from tvmflow.adapter import build
    with atomic_path(path, 0o755) as tmp:
        exported = build.export_library(executable, tmp, cross_compiler=cross,
                                        cuda_arch=preset.arch if preset.is_cuda else None,
                                        nvcc=nvcc)
        cuda = exported.get("cuda")
        if preset.is_cuda:
            from tvmflow.adapter.cuda import cuda_images
            images = cuda_images(tmp)
            if preset.arch not in images["cubin"] or images["ptx"] or images["source"]:
                raise TvmflowError(f"the CUDA module for {preset.arch} does not hold only a cubin "
                                   f"for it: {images}")
            cuda = dict(cuda, embedded=images)
        module = ModulePart(sha256_file(tmp), file=path.name, bytes=os.path.getsize(tmp))
    linker = exported.get("linker")
    # no timestamp, temp path or random name ends up in the .so: the same inputs give the same
    # bytes (tests/test_compile.py: test_same_inputs_..., test_cross_and_cuda_builds_...)
    built = BuildPart(linker=linker, linker_version=_linker_version(linker), reproducible=True)
    return module, built, (CudaPart.from_json(cuda) if cuda else None)


def _sidecar(spec, model, preset: TargetPreset, cross, seed: int, info, coverage,
             exported: tuple[ModulePart, BuildPart, CudaPart | None]) -> Sidecar:
    module, built, cuda = exported
    return Sidecar(
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        variant=VariantPart(spec.name, jsonable(spec.cfg())), weights=_weights(model),
        frontend=model.frontend, target=TargetPart.from_json(jsonable(preset.to_json())),
        cross_compiler=cross, input=InputPart(list(model.input_shape), model.input_dtype, seed,
                                              name=model.input_name),
        versions=_versions(), schedules=SchedulesPart.from_info(info), coverage=coverage,
        module=module, build=built, cuda=cuda)


def compile(variant: str, target: str | TargetPreset, output: str | Path | None = None,
            seed: int = 0, schedules: bool = True,
            on_status: Callable[[str], None] | None = None, model=None,
            cuda_graph: bool = False, force: bool = False) -> Package:
    """Compile ``variant`` for ``target`` into a ``.so`` + sidecar; returns the Package.

    ``schedules=False`` ignores any tuned database (default schedules everywhere).
    ``cuda_graph`` (CUDA targets): the module replays its kernel launches as one CUDA graph
    (recorded in the sidecar's ``cuda`` entry).  ``force``: replace a ``.so``/``.json`` at the
    output path that tvmflow did not write (its own modules are replaced anyway).
    ``on_status`` receives progress lines for the terminal.  ``model``: the variant already
    imported by :func:`tvmflow.ir.frontend.import_model` with this ``seed`` (saves the import
    when one variant is compiled for several targets; its module is not modified).
    """
    from tvmflow.ir.frontend import import_model
    from tvmflow.spec.registry import get_spec

    say = on_status or (lambda _msg: None)
    # everything that can fail fast, before the slow import and build
    spec = get_spec(variant)
    path = resolve_output(output, target.name if isinstance(target, TargetPreset) else target,
                          spec.name)
    preset = target if isinstance(target, TargetPreset) else get_target(target)
    check_cuda_graph(preset, cuda_graph)
    cross, nvcc = _toolchain(preset)
    check_output(path, force)
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
    exported = _export(executable, path, preset, cross, nvcc)
    exported[0].build_seconds = round(time.perf_counter() - t0, 2)
    if exported[2] is not None:
        exported[2].cuda_graph = bool(cuda_graph)
    pkg = Package(path, _sidecar(spec, model, preset, cross, seed, info, coverage, exported))
    pkg.write_sidecar()
    return pkg


# ---------------------------------------------------------------------------- staleness


def stale_reason(path: str | Path, *, schedules_info: dict | None | bool = True,
                 spec=None, preset: TargetPreset | None = None) -> str | None:
    """Why the package at ``path`` is not what a fresh compile would produce, or None.

    Checked: module or sidecar missing or unreadable, sha256 mismatch, an older sidecar
    format, tvmflow version, the variant's cfg (``spec`` or the registry's current one), the
    target preset as it loads now (``preset``), and the schedule database a compile would
    apply (``schedules_info``: the ``info`` of :func:`schedule_database`, None for "no
    database", or True to look it up).
    """
    try:
        pkg = Package.load(path)
    except TvmflowError as exc:
        return str(exc)
    side = pkg.sidecar
    if side.format != SIDECAR_FORMAT:
        return f"its sidecar is format {side.format}, this tvmflow writes {SIDECAR_FORMAT}"
    if side.versions.tvmflow != tvmflow_version():
        return f"compiled by tvmflow {side.versions.tvmflow}, this is tvmflow {tvmflow_version()}"
    try:
        from tvmflow.spec.registry import get_spec
        spec = spec or get_spec(pkg.variant)
        preset = preset or get_target(pkg.target_name)
        if schedules_info is True:
            _, schedules_info = schedule_database(preset, pkg.variant, load=False)
    except TvmflowError as exc:
        return f"{pkg.variant} for {pkg.target_name}: {exc}"
    if jsonable(spec.cfg()) != side.variant.cfg:
        return f"variant {pkg.variant} changed since it was compiled"
    if jsonable(preset.target) != side.target.target or \
            jsonable(preset.host) != side.target.host:
        return f"target preset {pkg.target_name} changed since it was compiled"
    return _schedules_reason(side.schedules, SchedulesPart.from_info(schedules_info))


def _schedules_reason(old: SchedulesPart | None, fresh: SchedulesPart | None) -> str | None:
    if (fresh and fresh.sha256) != (old and old.sha256):
        return (f"schedule database changed (compiled with {old.sha256[:12] if old else 'none'}, "
                f"now {fresh.sha256[:12] if fresh else 'none'})")
    if fresh and old and (fresh.cpu, fresh.running_on) != (old.cpu, old.running_on):
        return (f"schedule set changed (compiled with the set tuned on {old.cpu or '?'}, "
                f"now the one tuned on {fresh.cpu or '?'})")
    return None


def compile_reason(path: Path, spec, preset: TargetPreset, *, seed: int = 0,
                   schedules: bool = True, cuda_graph: bool = False) -> str | None:
    """Why the module at ``path`` must be (re)compiled for this request, or None when the one
    there is up to date: :func:`stale_reason`, plus the seed, schedules on/off and CUDA
    graphs asked for.  The one staleness check of compile and bench."""
    if not path.exists():
        return "not compiled yet"
    info = schedule_database(preset, spec.name, load=False)[1] if schedules else None
    reason = stale_reason(path, schedules_info=info, spec=spec, preset=preset)
    if reason is not None:
        return reason
    pkg = Package.load(path)
    if pkg.seed != seed:
        return f"compiled with seed {pkg.seed}, asked for {seed}"
    if not schedules and pkg.sidecar.schedules:
        return "compiled with tuned schedules, asked for none"
    if pkg.cuda_graph != bool(cuda_graph):
        return cuda_graph_reason(pkg.cuda_graph)
    return None


def compile_if_stale(variant: str, target: str | TargetPreset, output: str | Path | None = None,
                     seed: int = 0, schedules: bool = True, force: bool = False,
                     on_status: Callable[[str], None] | None = None,
                     cuda_graph: bool = False,
                     on_compile: Callable[[str], None] | None = None) -> tuple[Package, str | None]:
    """Reuse the module at the output path when it is up to date (:func:`compile_reason`),
    else compile it (``on_compile`` gets the reason first).

    Returns ``(package, why it was compiled)``; the reason is None when the existing module
    was reused.  ``force``: recompile, and replace files at the output path that tvmflow did
    not write.
    """
    from tvmflow.spec.registry import get_spec
    preset = target if isinstance(target, TargetPreset) else get_target(target)
    spec = get_spec(variant)
    path = resolve_output(output, preset.name, spec.name)
    reason = "--force" if force else compile_reason(path, spec, preset, seed=seed,
                                                    schedules=schedules, cuda_graph=cuda_graph)
    if reason is None:
        return Package.load(path), None
    if on_compile:
        on_compile(reason)
    return compile(spec.name, preset, path, seed=seed, schedules=schedules, on_status=on_status,
                   cuda_graph=cuda_graph, force=force), reason


def check_cuda_graph(preset: TargetPreset, cuda_graph: bool) -> None:
    """``--cuda-graph`` (compile, bench, compare) is for CUDA targets only."""
    if cuda_graph and not preset.is_cuda:
        raise TvmflowError(f"--cuda-graph needs a CUDA target; {preset.name} is "
                           f"{preset.target.get('kind')}")


def cuda_graph_reason(compiled_with: bool) -> str:
    return ("compiled with CUDA graphs, asked for none" if compiled_with
            else "compiled without CUDA graphs, asked for --cuda-graph")


__all__ = ["compile", "compile_if_stale", "compile_reason", "default_output", "resolve_output",
           "schedule_database", "sidecar_path", "stale_reason"]
