"""``tvmflow profile``: where the time goes, layer by layer, in the compiled module.

Each fused operator of the compiled module (each TIR PrimFunc the Relax VM calls = each
MetaSchedule tuning task) is timed on the device with TVM's own ``time_evaluator``, on the
very argument buffers it gets in a real run of ``main`` (``LoadedModule.kernels()``, see
:mod:`tvmflow.adapter.profile`).  The end-to-end latency of ``main`` is measured by the same
loaded module (``LoadedModule.time``), in the same interleaved rounds, so that the per-layer
times can be checked against it (``coverage`` = sum of kernel medians / end-to-end median; the
rest is the VM's own work: allocation, reshapes, calls).  Kernels are attributed to layers by
:func:`tvmflow.measure.layers.assign_layers`::

    >>> result = profile("pruned", "host")
    >>> result.layers[0].name, result.layers[0].cout, result.layers[0].median_ms, result.layers[0].share
    >>> side = profile_many(["pruned", "pruned-a8"], "host")   # interleaved, for a side-by-side

The module profiled is the one ``tvmflow compile`` would build: the variant's tuned schedules
for that target when ``schedules/<target>/<cpu>/<variant>/`` has them (the set tuned on this
CPU, else the nearest CPU's), otherwise TVM's default (untuned) schedules -- the result says
which (``schedules``, with the CPU the set was tuned on when it is another one).
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tvmflow.errors import TvmflowError
from tvmflow.artifact.modules import ensure_module, module_from_package
from tvmflow.measure.layers import assign_layers, layer_rows
from tvmflow.measure.profile_result import (KernelTime, ProfileComparison, ProfileResult,
                                            write_json)
from tvmflow.spec.registry import VariantSpec, get_spec

__all__ = ["Built", "ProfileComparison", "ProfileResult", "assign_layers", "build_for_profile",
           "compare_profiles", "profile", "profile_many", "write_json"]

OnStep = Callable[[str], None]


@dataclass
class Built:
    """A compiled module of a variant, ready to load."""

    spec: VariantSpec
    module: Any                # path of a compiled .so (or an executable built here)
    schedules: str
    input: np.ndarray


def _preset(target):
    from tvmflow.target.presets import TargetPreset, get_target
    return target if isinstance(target, TargetPreset) else get_target(target)


def build_for_profile(variant: str | VariantSpec, target="host", *, seed: int = 0,
                      tuned: bool = True, on_step: OnStep | None = None,
                      scratch: str | Path | None = None) -> Built:
    """The variant's compiled module, as ``tvmflow compile`` builds it.

    ``tuned``: the module of the artifacts cache (compiled -- or recompiled when stale -- with
    the target's tuned schedules where they exist); otherwise one compiled with TVM's default
    schedules into ``scratch`` (a directory that must outlive the profiling).
    """
    from tvmflow.artifact.compile import compile as compile_variant
    from tvmflow.spec.nin import example_input
    spec = variant if isinstance(variant, VariantSpec) else get_spec(variant)
    preset = _preset(target)
    x = example_input(spec, seed).numpy()
    if tuned:
        ref = ensure_module(spec.name, preset.name, seed=seed, say=on_step or (lambda _m: None))
        return Built(spec, ref.path, ref.schedules_text, x)
    if scratch is None:
        raise TvmflowError("an untuned profile compiles into a scratch directory; none given")
    if on_step:
        on_step(f"compiling {spec.name} for {preset.name} (default schedules)")
    pkg = compile_variant(spec.name, preset, output=Path(scratch) / f"{spec.name}.so",
                          seed=seed, schedules=False)
    return Built(spec, pkg.path, module_from_package(spec.name, pkg).schedules_text, x)


def _machine(preset) -> dict[str, Any]:
    from tvmflow.target.presets import _cpu_model, host_cores
    det = preset.detected or {}
    extra = ", ".join(x for x in (det.get("llvm_cpu"), "AVX-512" if det.get("avx512") else None) if x)
    name = f"{host_cores()}-core {_cpu_model()}" + (f" ({extra})" if extra else "")
    return dict(name=name, cpu=_cpu_model(), cores=host_cores(), target=preset.target,
                detected=det)


def _number_for(sample_s: float, min_ms: float) -> int:
    return max(1, int(math.ceil(min_ms / 1e3 / max(sample_s, 1e-7))))


@dataclass
class _Profiled:
    """One variant being profiled: its loaded module, kernel timer and samples so far."""

    built: Built
    loaded: Any
    timer: Any
    main_n: int
    numbers: list[int]
    main: list[float] = field(default_factory=list)
    samples: list[list[float]] = field(default_factory=list)

    @classmethod
    def start(cls, session, built: Built, min_ms: float) -> "_Profiled":
        """Load, record the kernel calls, and calibrate (one untimed call then one timed run
        each): how many runs make a sample of at least ``min_ms``."""
        loaded = session.load(built.module)
        loaded.set_input(built.input)
        timer = loaded.kernels()
        main_n = _number_for(float(loaded.time(1)[0]), min_ms)
        numbers = [_number_for(timer.time(c)[0], min_ms) for c in timer.calls]
        return cls(built, loaded, timer, main_n, numbers, [], [[] for _ in timer.calls])

    def one_round(self) -> None:
        self.main += [float(t) for t in self.loaded.time(1, number=self.main_n)]
        for i, call in enumerate(self.timer.calls):
            self.samples[i] += self.timer.time(call, number=self.numbers[i])

    def result(self, preset, rounds: int, threads: int) -> ProfileResult:
        spec = self.built.spec
        calls = self.timer.calls
        labels, warning = assign_layers([c.name for c in calls], spec)
        kernels = [KernelTime(c.index, c.name, labels[i], [list(s) for s in c.shapes],
                              [1e3 * s for s in self.samples[i]]) for i, c in enumerate(calls)]
        return ProfileResult(
            variant=spec.name, target=preset.name, device=preset.device,
            schedules=self.built.schedules, spec=spec.summary(), kernels=kernels,
            layers=layer_rows(spec, kernels), end_to_end_ms=[1e3 * s for s in self.main],
            rounds=rounds, machine=dict(_machine(preset), threads=threads),
            mapping_warning=warning)


def profile_many(variants: list[str | VariantSpec] | list[Built], target="host", *,
                 rounds: int = 20, min_ms: float = 2.0, seed: int = 0, tuned: bool = True,
                 threads: int | None = None, on_step: OnStep | None = None) -> list[ProfileResult]:
    """Profile several variants in the same interleaved rounds.

    Each round times, for each variant in turn, ``main`` once and each kernel call once (each
    sample the mean of enough back-to-back runs to last ``min_ms``, calibrated first).
    ``threads``: TVM's thread count in this process (default: ``TVM_NUM_THREADS``, else the
    target's ``num-cores``); the count TVM reports is in each result's ``machine["threads"]``.
    """
    from tvmflow.threads import resolve, scoped
    if rounds < 1:
        raise TvmflowError(f"rounds must be at least 1, got {rounds}")
    preset = _preset(target)
    n = resolve(preset, threads)
    with scoped(n):
        return _profile_many(variants, preset, rounds=rounds, min_ms=min_ms, seed=seed,
                             tuned=tuned, threads=n, on_step=on_step)


def _session(preset):
    """The local runtime session of ``preset``'s device; refused before any compile when the
    device is not this machine's."""
    from tvmflow.adapter.runtime import local_session
    if preset.device not in ("cpu", "cuda"):
        raise TvmflowError(f"cannot profile on device {preset.device!r}")
    if preset.is_cross:
        raise TvmflowError(f"profile runs on this machine; target {preset.name!r} is for "
                           f"{preset.cpu_triple}",
                           hint="profile --target host, or a CUDA target on a machine with the GPU")
    session = local_session(preset.device)
    session.check_device()        # no such device here: fail before the slow compile
    return session


def _profile_many(variants, preset, *, rounds: int, min_ms: float, seed: int, tuned: bool,
                  threads: int, on_step: OnStep | None) -> list[ProfileResult]:
    say = on_step or (lambda _m: None)
    session = _session(preset)
    with contextlib.ExitStack() as stack:
        scratch = None if tuned else stack.enter_context(
            tempfile.TemporaryDirectory(prefix="tvmflow-profile-"))
        built = [b if isinstance(b, Built) else
                 build_for_profile(b, preset, seed=seed, tuned=tuned, on_step=on_step,
                                   scratch=scratch) for b in variants]
        measured = session.use_threads(threads)  # the count TVM reports (a wrong one: error)
        states = []
        for b in built:
            say(f"recording the kernel calls of {b.spec.name}")
            states.append(_Profiled.start(session, b, min_ms))
        for r in range(rounds):
            say(f"timing round {r + 1}/{rounds}")
            for st in states:
                st.one_round()
    return [st.result(preset, rounds, measured) for st in states]


def profile(variant: str | VariantSpec, target="host", **kwargs) -> ProfileResult:
    """Per-layer latency of one variant's compiled module on ``target`` (see the module doc)."""
    return profile_many([variant], target, **kwargs)[0]


def compare_profiles(variants: list[str], target="host", **kwargs) -> ProfileComparison:
    """Side-by-side per-layer profile of several variants (measured interleaved)."""
    if len(variants) < 2:
        raise TvmflowError("a side-by-side profile needs at least two variants")
    return ProfileComparison(profile_many(list(variants), target, **kwargs))
