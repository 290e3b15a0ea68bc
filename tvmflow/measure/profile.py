"""``tvmflow profile``: where the time goes, layer by layer, in the compiled module.

Each fused operator of the compiled module (each TIR PrimFunc the Relax VM calls = each
MetaSchedule tuning task) is timed on the device with TVM's own ``time_evaluator``, on the
very argument buffers it gets in a real run of ``main`` (recorded with the VM's instrument
hook, see :mod:`tvmflow.adapter.profile`).  The end-to-end latency of ``main`` is measured the
same way, in the same interleaved rounds, so that the per-layer times can be checked against it
(``coverage`` = sum of kernel medians / end-to-end median; the rest is the VM's own work:
allocation, reshapes, calls).

Every kernel is attributed to the network layer it belongs to, in program order: a kernel
whose name contains ``conv2d`` opens the next conv layer of :meth:`VariantSpec.layers` (conv0
... block10, head); element-wise / bias / BN kernels belong to the conv before them; layout
transforms to the conv after them; pools get rows of their own (``pool1``, ``pool2``, and the
final global average pool ``avgpool``)::

    >>> result = profile("pruned", "host")
    >>> result.layers[0].name, result.layers[0].cout, result.layers[0].median_ms, result.layers[0].share
    >>> side = profile_many(["pruned", "pruned-a8"], "host")   # interleaved, for a side-by-side

The module profiled is the one ``tvmflow compile`` would build: the variant's tuned schedules
for that target when ``schedules/<target>/<cpu>/<variant>/`` has them (the set tuned on this
CPU, else the nearest CPU's), otherwise TVM's default (untuned) schedules -- the result says
which (``schedules``, with the CPU the set was tuned on when it is another one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tvmflow.errors import TvmflowError
from tvmflow.spec.registry import VariantSpec, get_spec

POOL_AFTER = {2: "pool1", 5: "pool2"}  # conv index a pool follows -> its row name
FINAL_POOL = "avgpool"


# ---------------------------------------------------------------------------- result objects


@dataclass
class KernelTime:
    index: int
    name: str
    layer: str
    shapes: list[list[int]]
    samples_ms: list[float]

    @property
    def median_ms(self) -> float:
        return float(np.median(self.samples_ms))

    def to_json(self) -> dict[str, Any]:
        return dict(index=self.index, name=self.name, layer=self.layer, shapes=self.shapes,
                    median_ms=self.median_ms, samples_ms=self.samples_ms)


@dataclass
class LayerTime:
    """One network layer: its channel counts and the kernels that compute it."""

    name: str
    kind: str                  # "conv" or "pool"
    cin: int
    cout: int
    groups: int
    kernel: int
    out_hw: int
    macs: int
    kernels: list[str]
    median_ms: float           # sum of its kernels' medians
    share: float = 0.0         # of the sum over all layers

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ProfileResult:
    variant: str
    target: str
    device: str
    schedules: str             # "tuned (12/12 tasks)", "default (untuned)", ...
    spec: dict[str, Any]
    kernels: list[KernelTime]
    layers: list[LayerTime]
    end_to_end_ms: list[float]
    rounds: int
    machine: dict[str, Any] = field(default_factory=dict)
    mapping_warning: str | None = None

    @property
    def end_to_end_median_ms(self) -> float:
        return float(np.median(self.end_to_end_ms))

    @property
    def kernel_sum_ms(self) -> float:
        return float(sum(k.median_ms for k in self.kernels))

    @property
    def end_to_end_best_ms(self) -> float:
        return float(min(self.end_to_end_ms))

    @property
    def kernel_best_sum_ms(self) -> float:
        """Sum of each kernel's fastest sample: with :attr:`end_to_end_best_ms`, the pair least
        disturbed by other processes on a shared machine."""
        return float(sum(min(k.samples_ms) for k in self.kernels))

    @property
    def coverage(self) -> float:
        """Sum of per-kernel medians over the end-to-end median (1.0 = all time is in kernels)."""
        return self.kernel_sum_ms / self.end_to_end_median_ms

    def layer(self, name: str) -> LayerTime:
        for row in self.layers:
            if row.name == name:
                return row
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return dict(variant=self.variant, target=self.target, device=self.device,
                    schedules=self.schedules, spec=self.spec, rounds=self.rounds,
                    end_to_end_median_ms=self.end_to_end_median_ms,
                    end_to_end_ms=self.end_to_end_ms, kernel_sum_ms=self.kernel_sum_ms,
                    end_to_end_best_ms=self.end_to_end_best_ms,
                    kernel_best_sum_ms=self.kernel_best_sum_ms,
                    coverage=self.coverage, machine=self.machine,
                    threads={"tvm": self.machine.get("threads")},
                    mapping_warning=self.mapping_warning,
                    layers=[r.to_json() for r in self.layers],
                    kernels=[k.to_json() for k in self.kernels])

    # ---- tables ----------------------------------------------------------------------------
    COLUMNS = ["layer", "cin", "cout", "groups", "k", "MMACs", "kernels", "ms", "share"]

    def rows(self) -> list[list[Any]]:
        out = [[r.name, r.cin, r.cout, r.groups if r.kind == "conv" else "-", r.kernel,
                f"{r.macs / 1e6:.2f}", len(r.kernels), f"{r.median_ms:.4f}",
                f"{100 * r.share:.1f}%"] for r in self.layers]
        out.append(["sum of layers", "", "", "", "", f"{self.spec['macs'] / 1e6:.2f}",
                    len(self.kernels), f"{self.kernel_sum_ms:.4f}", "100.0%"])
        out.append(["end to end (main)", "", "", "", "", "", "",
                    f"{self.end_to_end_median_ms:.4f}",
                    f"{100 * self.coverage:.1f}% in kernels"])
        return out

    def markdown(self) -> str:
        return _markdown(self.COLUMNS, self.rows())


@dataclass
class ProfileComparison:
    """Several variants profiled in the same interleaved rounds, side by side per layer."""

    results: list[ProfileResult]

    @property
    def variants(self) -> list[str]:
        return [r.variant for r in self.results]

    def layer_names(self) -> list[str]:
        names: list[str] = []
        for res in self.results:
            for row in res.layers:
                if row.name not in names:
                    names.append(row.name)
        return names

    def columns(self) -> list[str]:
        cols = ["layer"]
        for v in self.variants:
            cols += [f"{v} cin/cout", f"{v} ms", f"{v} share"]
        if len(self.results) == 2:
            cols.append(f"{self.variants[1]} / {self.variants[0]}")
        return cols

    def rows(self) -> list[list[Any]]:
        out = []
        for name in self.layer_names():
            row: list[Any] = [name]
            times = []
            for res in self.results:
                try:
                    layer = res.layer(name)
                except KeyError:
                    row += ["-", "-", "-"]
                    times.append(None)
                    continue
                ch = f"{layer.cin}/{layer.cout}" + (f" g{layer.groups}" if layer.groups > 1 else "")
                row += [ch, f"{layer.median_ms:.4f}", f"{100 * layer.share:.1f}%"]
                times.append(layer.median_ms)
            if len(self.results) == 2:
                row.append(f"{times[1] / times[0]:.2f}" if None not in times and times[0] else "-")
            out.append(row)
        for label, get in (("sum of layers", lambda r: r.kernel_sum_ms),
                           ("end to end (main)", lambda r: r.end_to_end_median_ms)):
            row = [label]
            vals = [get(r) for r in self.results]
            for v in vals:
                row += ["", f"{v:.4f}", ""]
            if len(vals) == 2:
                row.append(f"{vals[1] / vals[0]:.2f}")
            out.append(row)
        return out

    def markdown(self) -> str:
        return _markdown(self.columns(), self.rows())

    def to_json(self) -> dict[str, Any]:
        return dict(variants=self.variants, columns=self.columns(), rows=self.rows(),
                    results=[r.to_json() for r in self.results])


def _markdown(columns: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- layer mapping


def assign_layers(kernel_names: list[str], spec: VariantSpec) -> tuple[list[str], str | None]:
    """The layer name of each kernel call (in program order), and a warning if the module's
    conv kernels do not line up with the variant's conv layers."""
    convs = [row["name"] for row in spec.layers()]
    labels: list[str | None] = [None] * len(kernel_names)
    conv = -1
    pending: list[int] = []
    n_conv = sum("conv2d" in n for n in kernel_names)
    warning = None
    if n_conv != len(convs):
        warning = (f"the module has {n_conv} conv kernels for {len(convs)} conv layers; "
                   "the layer attribution is approximate")
    for i, name in enumerate(kernel_names):
        if "conv2d" in name:
            conv = min(conv + 1, len(convs) - 1)
            for j in pending:
                labels[j] = convs[conv]
            pending = []
            labels[i] = convs[conv]
        elif "pool" in name:
            labels[i] = FINAL_POOL if conv >= len(convs) - 1 else POOL_AFTER.get(conv, f"pool@{conv}")
        elif "layout_transform" in name or conv < 0:
            pending.append(i)
        else:
            labels[i] = convs[conv]
    for j in pending:  # trailing transforms: the last layer's output
        labels[j] = convs[max(conv, 0)]
    return [str(label) for label in labels], warning


def _layer_rows(spec: VariantSpec, kernels: list[KernelTime]) -> list[LayerTime]:
    geometry = {row["name"]: row for row in spec.layers()}
    order: list[str] = []
    for k in kernels:
        if k.layer not in order:
            order.append(k.layer)
    rows = []
    prev_cout = spec.in_channels
    for name in order:
        ks = [k for k in kernels if k.layer == name]
        ms = float(sum(k.median_ms for k in ks))
        if name in geometry:
            g = geometry[name]
            rows.append(LayerTime(name, "conv", g["cin"], g["cout"], g["groups"], g["kernel"],
                                  g["out_hw"], g["macs"], [k.name for k in ks], ms))
            prev_cout = g["cout"]
        else:
            pool = {"pool1": spec.pool1, "pool2": spec.pool2}.get(name)
            # the final pool averages the head's whole output map
            kernel = pool.kernel if pool else spec.layers()[-1]["out_hw"]
            rows.append(LayerTime(name, "pool", prev_cout, prev_cout, 1, kernel, 0, 0,
                                  [k.name for k in ks], ms))
    total = sum(r.median_ms for r in rows) or 1.0
    for r in rows:
        r.share = r.median_ms / total
    return rows


# ---------------------------------------------------------------------------- building


@dataclass
class Built:
    """A compiled module of a variant, ready to load."""

    spec: VariantSpec
    module: Any                # executable or path of a compiled .so
    schedules: str
    input: np.ndarray


def _preset(target):
    from tvmflow.target.presets import TargetPreset, get_target
    return target if isinstance(target, TargetPreset) else get_target(target)


def build_for_profile(variant: str | VariantSpec, target="host", *, seed: int = 0,
                      tuned: bool = True, on_step: Callable[[str], None] | None = None) -> Built:
    """The variant's compiled module, as ``tvmflow compile`` builds it.

    ``tuned``: the module of the artifacts cache (compiled -- or recompiled when stale -- with
    the target's tuned schedules where they exist); otherwise one compiled with TVM's default
    schedules into a temporary directory.  Without ``tvmflow.compile`` in the tree, the module
    is built in this process by the shared pipeline (no tuning database).
    """
    from tvmflow.spec.nin import example_input
    spec = variant if isinstance(variant, VariantSpec) else get_spec(variant)
    preset = _preset(target)
    x = example_input(spec, seed).numpy()
    from tvmflow.adapter.profile import load_library
    from tvmflow.artifact.compile import compile as compile_variant
    if tuned:
        from tvmflow.measure.bench import ensure_module
        ref = ensure_module(spec.name, preset.name, seed=seed, say=on_step or (lambda _m: None))
        return Built(spec, ref.path, _schedules_text(ref.sidecar), x)
    import tempfile
    with tempfile.TemporaryDirectory(prefix="tvmflow-profile-") as tmp:
        if on_step:
            on_step(f"compiling {spec.name} for {preset.name} (default schedules)")
        pkg = compile_variant(spec.name, preset, output=Path(tmp) / f"{spec.name}.so",
                                  seed=seed, schedules=False)
        module = load_library(pkg.path)  # loaded before the directory goes
    return Built(spec, module, _schedules_text(pkg.sidecar), x)


def _schedules_text(sidecar) -> str:
    """``sidecar``: a tvmflow.artifact.sidecar.Sidecar (None: unknown)."""
    cov = sidecar.coverage.to_json() if sidecar else {}
    if cov.get("tuned"):
        sched = sidecar.schedules
        trials = sched.trials if sched else None
        other = sched.cpu if sched and sched.match == "nearest" else None
        fixed = len(cov.get("fixed") or [])
        return (f"tuned ({cov['tuned']}/{cov.get('tasks')} tasks"
                + (f" +{fixed} fixed" if fixed else "")
                + (f", {trials} trials" if isinstance(trials, int) else "")
                + (f", {_layout(cov)}" if _layout(cov) else "")
                + (f", tuned on {other}" if other else "") + ")")
    return "default (untuned)"


def _layout(cov: dict[str, Any]) -> str | None:
    """``NCHW16c`` / ``NCHW`` / ... of a sidecar's pipeline, when it records one."""
    pipe = cov.get("pipeline") or {}
    layout = pipe.get("layout")
    if layout == "NCHWc":
        return f"NCHW{pipe.get('block') or ''}c"
    return layout


# ---------------------------------------------------------------------------- measuring


def _machine(preset) -> dict[str, Any]:
    from tvmflow.target.presets import _cpu_model, host_cores
    det = preset.detected or {}
    extra = ", ".join(x for x in (det.get("llvm_cpu"), "AVX-512" if det.get("avx512") else None) if x)
    name = f"{host_cores()}-core {_cpu_model()}" + (f" ({extra})" if extra else "")
    return dict(name=name, cpu=_cpu_model(), cores=host_cores(), target=preset.target,
                detected=det)


def _number_for(sample_s: float, min_ms: float) -> int:
    return max(1, int(math.ceil(min_ms / 1e3 / max(sample_s, 1e-7))))


def profile_many(variants: list[str | VariantSpec] | list[Built], target="host", *,
                 rounds: int = 20, min_ms: float = 2.0, seed: int = 0, tuned: bool = True,
                 threads: int | None = None,
                 on_step: Callable[[str], None] | None = None) -> list[ProfileResult]:
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


def _profile_many(variants, preset, *, rounds: int, min_ms: float, seed: int, tuned: bool,
                  threads: int, on_step) -> list[ProfileResult]:
    from tvmflow.adapter import profile as ap
    from tvmflow.adapter.runtime import local_threads
    if preset.device != "cpu" and preset.device != "cuda":
        raise TvmflowError(f"cannot profile on device {preset.device!r}")
    if preset.is_cross:
        raise TvmflowError(f"profile runs on this machine; target {preset.name!r} is for "
                           f"{preset.cpu_triple}",
                           hint="profile --target host, or a CUDA target on a machine with the GPU")
    ap.device(preset.device)  # no such device here: fail before the slow compile
    built = [b if isinstance(b, Built) else build_for_profile(b, preset, seed=seed, tuned=tuned,
                                                             on_step=on_step) for b in variants]
    measured = local_threads(threads)  # the count TVM reports here (a wrong one is an error)
    states = []
    for b in built:
        if on_step:
            on_step(f"recording the kernel calls of {b.spec.name}")
        session = ap.load(b.module, preset.device)
        x = ap.to_device(session, b.input)
        calls = ap.record_calls(session, x)
        # warm-up + calibration: one untimed call then one timed run each
        main_n = _number_for(ap.time_main(session, x)[0], min_ms)
        numbers = [_number_for(ap.time_call(session, c)[0], min_ms) for c in calls]
        states.append(dict(built=b, session=session, x=x, calls=calls, main_n=main_n,
                           numbers=numbers, main=[], samples=[[] for _ in calls]))
    for r in range(rounds):
        if on_step:
            on_step(f"timing round {r + 1}/{rounds}")
        for st in states:
            st["main"] += ap.time_main(st["session"], st["x"], number=st["main_n"])
            for i, call in enumerate(st["calls"]):
                st["samples"][i] += ap.time_call(st["session"], call, number=st["numbers"][i])
    results = []
    for st in states:
        spec = st["built"].spec
        names = [c.name for c in st["calls"]]
        labels, warning = assign_layers(names, spec)
        kernels = [KernelTime(c.index, c.name, labels[i], [list(s) for s in c.shapes],
                              [1e3 * s for s in st["samples"][i]])
                   for i, c in enumerate(st["calls"])]
        results.append(ProfileResult(
            variant=spec.name, target=preset.name, device=preset.device,
            schedules=st["built"].schedules, spec=spec.summary(), kernels=kernels,
            layers=_layer_rows(spec, kernels), end_to_end_ms=[1e3 * s for s in st["main"]],
            rounds=rounds, machine=dict(_machine(preset), threads=measured),
            mapping_warning=warning))
    return results


def profile(variant: str | VariantSpec, target="host", **kwargs) -> ProfileResult:
    """Per-layer latency of one variant's compiled module on ``target`` (see the module doc)."""
    return profile_many([variant], target, **kwargs)[0]


def compare_profiles(variants: list[str], target="host", **kwargs) -> ProfileComparison:
    """Side-by-side per-layer profile of several variants (measured interleaved)."""
    if len(variants) < 2:
        raise TvmflowError("a side-by-side profile needs at least two variants")
    return ProfileComparison(profile_many(list(variants), target, **kwargs))


def write_json(obj, path: str | Path) -> Path:
    import json
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj.to_json(), indent=2) + "\n")
    return path
