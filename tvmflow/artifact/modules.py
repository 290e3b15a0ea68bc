"""A variant's compiled module, up to date, as the stages above read it.

:func:`ensure_module` is the stage between compile and every measurement (bench, compare,
profile, sweep): the variant's module at ``tvmflow compile``'s default path, compiled first
(with the tuned schedules where they exist) when missing or stale.  :class:`ModuleRef` is what
the measuring stages need of a :class:`~tvmflow.artifact.package.Package`, read once, in
:func:`module_from_package`.

The sidecar is read through Package's properties; the sections Package has no property for
(``schedules``, ``coverage``, ``weights``, ``target``) go through :func:`sidecar_section`
only, the one place to switch when the sidecar becomes a typed record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tvmflow.artifact.package import Package

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def sidecar_section(pkg: Package, name: str) -> dict[str, Any]:
    """The sidecar's ``name`` section as a dict (empty when absent or null)."""
    value = (pkg.sidecar or {}).get(name)
    return dict(value) if isinstance(value, dict) else {}


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


def _meta_trials(path: str) -> int | None:
    """Trials in a schedules directory's meta.json (older sidecars do not record them)."""
    p = Path(path)
    for meta in (p / "meta.json", p.parent / "meta.json"):
        try:
            data = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        for key in ("trials", "max_trials", "trials_run", "max_trials_global"):
            val = data.get(key)
            if isinstance(val, int):
                return val
            if isinstance(val, dict):   # e.g. {"requested": N, "run": M}
                for k in ("run", "measured", "requested", "total"):
                    if isinstance(val.get(k), int):
                        return val[k]
    return None


def trials(pkg: Package) -> int | None:
    """Tuning trials behind the module's schedules: the sidecar, else the schedules' meta.json.

    None: the module has no tuned schedules (TVM's default schedules).
    """
    sched = sidecar_section(pkg, "schedules")
    if not sched:
        return None
    for key in ("trials", "max_trials"):
        if isinstance(sched.get(key), int):
            return sched[key]
    found = _meta_trials(sched["path"]) if sched.get("path") else None
    if found is None and isinstance(sched.get("records"), int):
        return sched["records"]
    return found


def schedule_set(pkg: Package) -> dict[str, Any]:
    """Which CPU's schedule set the module was compiled with (the sidecar's record)."""
    sched = sidecar_section(pkg, "schedules")
    return {k: sched[k] for k in ("cpu", "running_on", "match", "pipeline") if k in sched}


def coverage_text(pkg: Package) -> str | None:
    cov = sidecar_section(pkg, "coverage")
    if isinstance(cov.get("tasks"), int):
        fixed = len(cov.get("fixed") or [])
        return f"{cov.get('tuned', 0)}/{cov['tasks']}" + (f" +{fixed} fixed" if fixed else "")
    return None


def _layout(cov: dict[str, Any]) -> str | None:
    """``NCHW16c`` / ``NCHW`` / ... of a sidecar's pipeline, when it records one."""
    pipe = cov.get("pipeline") or {}
    layout = pipe.get("layout")
    if layout == "NCHWc":
        return f"NCHW{pipe.get('block') or ''}c"
    return layout


def schedules_text(pkg: Package) -> str:
    """``tuned (12/13 tasks, 768 trials, NCHW16c, tuned on znver4)`` or ``default (untuned)``."""
    cov = sidecar_section(pkg, "coverage")
    if not cov.get("tuned"):
        return "default (untuned)"
    sched = sidecar_section(pkg, "schedules")
    n_trials = sched.get("trials")
    other = sched.get("cpu") if sched.get("match") == "nearest" else None
    fixed = len(cov.get("fixed") or [])
    layout = _layout(cov)
    return (f"tuned ({cov['tuned']}/{cov.get('tasks')} tasks"
            + (f" +{fixed} fixed" if fixed else "")
            + (f", {n_trials} trials" if isinstance(n_trials, int) else "")
            + (f", {layout}" if layout else "")
            + (f", tuned on {other}" if other else "") + ")")


def module_from_package(variant: str, pkg: Package, compiled_now: bool = False) -> ModuleRef:
    """A :class:`ModuleRef` from a Package (compile's result)."""
    from tvmflow.adapter.arch import triple_arch
    weights = sidecar_section(pkg, "weights")
    return ModuleRef(variant=variant, path=Path(pkg.path), seed=int(pkg.seed),
                     trials=trials(pkg), coverage=coverage_text(pkg),
                     checkpoint=weights.get("path") if weights.get("kind") != "random" else None,
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
    from tvmflow.artifact.compile import compile as compile_variant
    from tvmflow.artifact.compile import cuda_graph_reason, default_output
    from tvmflow.artifact.package import stale_reason
    path = default_output(target, variant)
    reason = stale_reason(path) if path.exists() else "not compiled yet"
    if reason is None:
        pkg = Package.load(path)
        if pkg.seed != seed:
            reason = f"compiled with seed {pkg.seed}, asked for {seed}"
        elif pkg.cuda_graph != bool(cuda_graph):
            reason = cuda_graph_reason(pkg.cuda_graph)
        else:
            return module_from_package(variant, pkg)
    say(f"compiling {variant} for {target} ({reason})")
    pkg = compile_variant(variant, target, seed=seed, on_status=say, cuda_graph=cuda_graph)
    return module_from_package(variant, pkg, compiled_now=True)
