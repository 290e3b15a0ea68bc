"""A variant's compiled module, up to date, as the stages above read it.

:func:`ensure_module` is the stage between compile and every measurement (bench, compare,
profile, sweep): the variant's module at ``tvmflow compile``'s default path, compiled first
(with the tuned schedules where they exist) when missing or stale.  :class:`ModuleRef` is what
the measuring stages need of a :class:`~tvmflow.artifact.package.Package`, read once, in
:func:`module_from_package`.

The sidecar is read as its typed record (:class:`~tvmflow.artifact.sidecar.Sidecar`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tvmflow.artifact.package import Package

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class ModuleRef:
    """A compiled module of one variant: the ``.so`` and what its sidecar says."""

    variant: str
    path: Path
    seed: int = 0
    trials: int | None = None
    checkpoint: str | None = None
    arch: str | None = None          # CPU arch the module was built for (x86_64, aarch64)
    compiled_now: bool = False
    coverage: str | None = None      # "tuned/tasks" of the module's tasks with a tuned schedule
    schedule_set: dict[str, Any] = field(default_factory=dict)   # the CPU its set was tuned on
    schedules_text: str = "default (untuned)"
    cuda_graph: bool = False


def trials(pkg: Package) -> int | None:
    """Tuning trials behind the module's schedules (None: TVM's default schedules)."""
    sched = pkg.sidecar.schedules
    if sched is None:
        return None
    if isinstance(sched.trials, int):
        return sched.trials
    from tvmflow.tuning.schedules import read_meta
    found = read_meta(Path(sched.path)).get("trials") if sched.path else None
    return found if isinstance(found, int) else sched.records


def schedule_set(pkg: Package) -> dict[str, Any]:
    """Which CPU's schedule set the module was compiled with (the sidecar's record)."""
    sched = pkg.sidecar.schedules
    if sched is None:
        return {}
    return {k: v for k, v in (("cpu", sched.cpu), ("running_on", sched.running_on),
                              ("match", sched.match), ("pipeline", sched.pipeline)) if v is not None}


def coverage_text(pkg: Package) -> str | None:
    cov = pkg.sidecar.coverage
    if isinstance(cov.tasks, int):
        fixed = len(cov.fixed or [])
        return f"{cov.tuned}/{cov.tasks}" + (f" +{fixed} fixed" if fixed else "")
    return None


def _layout(pipe: dict[str, Any] | None) -> str | None:
    """``NCHW16c`` / ``NCHW`` / ... of a sidecar's pipeline, when it records one."""
    layout = (pipe or {}).get("layout")
    if layout == "NCHWc":
        return f"NCHW{(pipe or {}).get('block') or ''}c"
    return layout


def schedules_text(pkg: Package) -> str:
    """``tuned (12/13 tasks, 768 trials, NCHW16c, tuned on znver4)`` or ``default (untuned)``."""
    cov, sched = pkg.sidecar.coverage, pkg.sidecar.schedules
    if not cov.tuned:
        return "default (untuned)"
    n_trials = sched.trials if sched else None
    other = sched.cpu if sched and sched.match == "nearest" else None
    fixed = len(cov.fixed or [])
    layout = _layout(cov.pipeline)
    return (f"tuned ({cov.tuned}/{cov.tasks} tasks"
            + (f" +{fixed} fixed" if fixed else "")
            + (f", {n_trials} trials" if isinstance(n_trials, int) else "")
            + (f", {layout}" if layout else "")
            + (f", tuned on {other}" if other else "") + ")")


def module_from_package(variant: str, pkg: Package, compiled_now: bool = False) -> ModuleRef:
    """A :class:`ModuleRef` from a Package (compile's result)."""
    from tvmflow.adapter.arch import triple_arch
    weights = pkg.sidecar.weights
    return ModuleRef(variant=variant, path=Path(pkg.path), seed=int(pkg.seed),
                     trials=trials(pkg), coverage=coverage_text(pkg),
                     checkpoint=weights.path if weights.kind != "random" else None,
                     arch=triple_arch(pkg.cpu_triple), compiled_now=compiled_now,
                     schedule_set=schedule_set(pkg), schedules_text=schedules_text(pkg),
                     cuda_graph=pkg.cuda_graph)


def ensure_module(variant: str, target: str, *, seed: int = 0, say: Say = _quiet,
                  cuda_graph: bool = False) -> ModuleRef:
    """The variant's compiled module for ``target`` (tvmflow compile's default output path).

    Compiled first (with the tuned schedules where they exist) when it is missing, or stale:
    another variant cfg, target preset, tvmflow version or schedule database, another seed,
    or compiled with(out) CUDA graphs when asked for the other.
    """
    from tvmflow.artifact.compile import compile_if_stale
    pkg, reason = compile_if_stale(
        variant, target, seed=seed, on_status=say, cuda_graph=cuda_graph,
        on_compile=lambda why: say(f"compiling {variant} for {target} ({why})"))
    return module_from_package(variant, pkg, compiled_now=reason is not None)
