"""``tvmflow sweep``: the channel-alignment curve of a pruned model.

From a pruned variant (or a user's pruned checkpoint), build the variants micronet's regular
pruning would give for each alignment N -- every layer's channel count rounded to the nearest
multiple of N (ties up, capped at the *base* (unpruned) layer width, counts below N unchanged:
:func:`tvmflow.spec.prune.align_channels`) -- register them as variants ``<source>-a<N>``, compile
each for the target (its tuned schedules when it has them, tuning first with ``trials``), time
them all in interleaved rounds and report latency p50 with a 95 % confidence interval, MACs and
params per N, as a table, JSON, CSV and a plot of latency and MACs against N::

    >>> result = sweep("pruned", [1, 2, 4, 8, 16, 32], target="host")
    >>> [(row.align, row.variant, row.p50_ms, row.macs) for row in result.rows]

An aligned variant whose channels equal an existing one reuses it (N=1 is the source itself;
``pruned-a8`` is reused for the seed's ``pruned`` at N=8); a new one is written as a variant
file (``base`` + ``channels``, no checkpoint: latency does not depend on the weights, so it
gets seeded random weights) into ``models_dir`` (the planning: :mod:`.sweep_plan`).

Any torchvision or entry-point model is swept the same way from its unpruned variant: it is
pruned at ``ratio`` by Torch-Pruning once per N (N as ``round_to``) into ``<model>-p<R>[-a<N>]``
variants (:mod:`.sweep_models`), which are then tuned, compiled and timed as above::

    >>> sweep("resnet18", [1, 2, 4, 8], ratio=0.5, trials=200)
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tvmflow.errors import TvmflowError
from tvmflow.experiments.sweep_models import plan as plan_variants
from tvmflow.experiments.sweep_plan import DEFAULT_ALIGNS, SweepPlan
from tvmflow.spec.registry import VariantSpec, model_dirs
from tvmflow.workspace import Workspace


# ---------------------------------------------------------------------------- measuring


def channels_text(channels: list[int], most: int = 12) -> str:
    """The channel list for a table: whole for NIN, summed for a model with many convs."""
    if len(channels) <= most:
        return " ".join(map(str, channels))
    odd = sum(1 for c in channels if c % 8)
    return f"{len(channels)} convs, {sum(channels):,} ch, {odd} not /8"


@dataclass
class SweepRow:
    align: int
    variant: str
    channels: list[int]
    macs: int
    params: int
    p50_ms: float
    ci_low_ms: float
    ci_high_ms: float
    samples_ms: list[float]
    schedules: str
    reused: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SweepResult:
    source: str
    base: str
    target: str
    rows: list[SweepRow]
    samples: int               # per variant
    trials: int | None
    elapsed_s: float
    machine: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)
    per_layer: Any = None          # a tvmflow.measure.profile.ProfileComparison with per_layer=True

    COLUMNS = ["N", "variant", "channels", "MMACs", "params", "p50 ms", "95% CI ms", "vs N=1",
               "schedules"]

    def reference(self) -> SweepRow:
        return next((r for r in self.rows if r.align == 1), self.rows[0])

    def faster_with_more_macs(self) -> list[int]:
        """Alignments whose model is faster than the reference although it has more MACs."""
        ref = self.reference()
        return [r.align for r in self.rows
                if r.macs > ref.macs and r.ci_high_ms < ref.ci_low_ms]

    def table_rows(self) -> list[list[Any]]:
        ref = self.reference()
        return [[r.align, r.variant, channels_text(r.channels), f"{r.macs / 1e6:.2f}",
                 f"{r.params:,}", f"{r.p50_ms:.4f}", f"{r.ci_low_ms:.4f}-{r.ci_high_ms:.4f}",
                 f"{r.p50_ms / ref.p50_ms:.3f}", r.schedules] for r in self.rows]

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.COLUMNS) + " |",
                 "|" + "|".join("---:" if i in (0, 3, 4, 5, 6, 7) else "---"
                                for i in range(len(self.COLUMNS))) + "|"]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in self.table_rows()]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        return dict(source=self.source, base=self.base, target=self.target, samples=self.samples,
                    trials=self.trials, elapsed_s=self.elapsed_s, machine=self.machine,
                    faster_with_more_macs=self.faster_with_more_macs(), files=self.files,
                    rows=[r.to_json() for r in self.rows])


def _tune(spec: VariantSpec, preset, trials: int, on_step, per_round: int | None = None,
          threads: int | None = None) -> None:
    """Tune one variant (:func:`tvmflow.tuning.tune.tune`), reusing existing logs."""
    from tvmflow.tuning.tune import tune
    if on_step:
        on_step(f"tuning {spec.name} ({trials} trials)")
    kw = {"per_round": per_round} if per_round else {}
    if threads is not None:
        kw["threads"] = threads
    tune(spec.name, preset.name, trials=trials, **kw)


def sweep(source: str | Path = "pruned", aligns=DEFAULT_ALIGNS, target: str = "host", *,
          trials: int | None = None, rounds: int = 20, repeat: int = 10, seed: int = 0,
          base: str | None = None, name: str | None = None, models_dir: str | Path | None = None,
          out_dir: str | Path | None = None, plot: bool = True, route: dict | None = None,
          per_layer: bool = False, per_round: int | None = None, threads: int | None = None,
          ratio: float | None = None, importance: str = "magnitude",
          on_step: Callable[[str], None] | None = None) -> SweepResult:
    """The alignment sweep (see the module doc).

    ``trials``: None uses the tuned schedules that exist (``schedules/<target>/<cpu>/<variant>/``:
    this CPU's set, else the nearest CPU's) and TVM's defaults elsewhere; 0 uses TVM's default schedules for all; N > 0 tunes each
    variant with N trials first (the tuner reuses logs it already has; ``per_round``: its
    candidates per round -- with 13 tasks a round of 16 reaches every task within ~208 trials).  ``rounds``: timing
    rounds; each round takes ``repeat`` single-run samples (``time_evaluator`` with
    ``number=1``: raw samples, no means of means) of every variant in turn, alternating the
    order, so that all variants see the same machine state.  The modules are the compiled
    ``.so`` files and the timing is :func:`tvmflow.measure.bench.run`
    (``compare`` mode: interleaved rounds, output checked against PyTorch), on this machine
    or, through ``route`` (``via``/``rpc``/``tracker``/``key`` as for ``bench``), on a board.
    ``ratio`` / ``importance``: Torch-Pruning's, for a torchvision or entry-point ``source``
    (required there, refused for NIN).
    ``threads``: TVM's thread count for tuning, timing and profiling (default
    ``TVM_NUM_THREADS``, else the target's ``num-cores``); the measured count is in
    ``machine["threads"]``.
    """
    from tvmflow.measure.profile import _machine, _preset
    from tvmflow.threads import resolve
    t0 = time.monotonic()
    preset = _preset(target)
    threads = resolve(preset, threads)
    where = _check_args(preset, trials=trials, rounds=rounds, repeat=repeat,
                        per_round=per_round, per_layer=per_layer, route=route or {})
    plan = plan_variants(source, aligns, base=base, name=name, models_dir=models_dir,
                         ratio=ratio, importance=importance, say=on_step)
    _put_on_model_path(plan.models_dir)
    if trials:
        for v in plan.unique():
            _tune(v.spec, preset, trials, on_step, per_round, threads)
    out = Path(out_dir) if out_dir else Workspace.current().reports / f"sweep-{preset.name}-{plan.source.name}"
    samples, schedules, measured = _measure_bench(plan, preset, rounds=rounds, repeat=repeat,
                                                  seed=seed, route=where, tuned=trials != 0,
                                                  module_dir=out / "modules", threads=threads,
                                                  on_step=on_step)
    result = SweepResult(plan.source.name, plan.base.name, preset.name,
                         _rows(plan, samples, schedules), rounds * repeat, trials, 0.0,
                         dict(_machine(preset), threads=measured, threads_requested=threads))
    out.mkdir(parents=True, exist_ok=True)
    result.files["csv"] = str(write_csv(result, out / "sweep.csv"))
    if plot:
        result.files["png"] = str(plot_sweep(result, out / "sweep.png"))
    if per_layer:
        _per_layer(result, plan, preset, out, rounds=rounds, seed=seed, tuned=trials != 0,
                   threads=threads, on_step=on_step)
    result.elapsed_s = time.monotonic() - t0
    result.files["json"] = str(out / "sweep.json")
    (out / "sweep.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return result


def _check_args(preset, *, trials, rounds, repeat, per_round, per_layer, route: dict):
    """Refuse what sweep would ignore or fail on late (after tuning): before any work.
    Returns the resolved route (a :class:`~tvmflow.runtime.session.Route`)."""
    if trials is not None and trials < 0:
        raise TvmflowError(f"--trials must be 0 or more, got {trials}")
    if rounds < 1 or repeat < 1 or rounds * repeat < 3:
        raise TvmflowError(f"need at least 3 samples per variant (--rounds x --repeat), got "
                           f"{rounds} x {repeat}")
    if per_round is not None and not trials:
        raise TvmflowError("--per-round is the tuner's; it needs --trials N (N > 0)")
    if per_layer and preset.is_cross:
        raise TvmflowError(f"--per-layer profiles on this machine; target {preset.name} is for "
                           f"{preset.cpu_triple}", hint="use it with --target host")
    from tvmflow.runtime.session import preflight, resolve_route
    r = resolve_route(via=route.get("via"), rpc=route.get("rpc"), tracker=route.get("tracker"),
                      key=route.get("key"), default_key=preset.rpc_key)
    if r.mode in ("local", "local-rpc") and preset.is_cross:
        raise TvmflowError(f"target {preset.name} runs on {preset.cpu_triple.split('-')[0]}, "
                           "not on this machine",
                           hint="give the board: --tracker HOST:PORT --key K or --rpc HOST:PORT")
    preflight(r, target=preset.name)     # an unreachable board fails before tuning or compiling
    return r


def _rows(plan: SweepPlan, samples: dict[str, list[float]], schedules: dict[str, str]
          ) -> list[SweepRow]:
    """A row per alignment: p50 and its 95 % CI of the variant's samples (ms)."""
    from tvmflow.measure.stats import Latency
    rows = []
    for v in plan.variants:
        lat = Latency.from_samples(samples[v.name])
        lo, hi = lat.median_ci(0.95)
        rows.append(SweepRow(v.align, v.name, list(v.channels), v.spec.macs, v.spec.params,
                             lat.p50, lo, hi, samples[v.name], schedules[v.name], v.reused))
    return rows


def _per_layer(result: SweepResult, plan: SweepPlan, preset, out: Path, *, rounds: int,
               seed: int, tuned: bool, threads: int | None, on_step) -> None:
    """The per-layer profile of the sweep's variants, into ``result`` and ``out``."""
    from tvmflow.measure.profile import compare_profiles, write_json
    names = [v.name for v in plan.unique()]
    if len(names) > 1 and not preset.is_cross:
        result.per_layer = compare_profiles(names, preset, rounds=max(3, min(rounds, 20)),
                                            seed=seed, tuned=tuned, threads=threads,
                                            on_step=on_step)
        result.files["per_layer"] = str(write_json(result.per_layer, out / "per_layer.json"))
        (out / "per_layer.md").write_text(result.per_layer.markdown())


def _put_on_model_path(directory: Path) -> None:
    """Make variants written to ``directory`` visible to the registry in this process."""
    import os
    directory = Path(directory).resolve()
    if directory in [d.resolve() for d in model_dirs()]:
        return
    old = os.environ.get("TVMFLOW_MODEL_PATH", "")
    os.environ["TVMFLOW_MODEL_PATH"] = os.pathsep.join(x for x in (str(directory), old) if x)


def _measure_bench(plan: SweepPlan, preset, *, rounds: int, repeat: int, seed: int, route,
                   tuned: bool, module_dir: Path, on_step, threads: int | None = None
                   ) -> tuple[dict[str, list[float]], dict[str, str], Any]:
    """Compile each variant and time them all with bench's interleaved ``compare`` rounds.

    Returns the samples and schedules per variant and TVM's measured thread count.
    ``route``: the Route that _check_args resolved.

    ``tuned``: the compiled module of the artifacts cache (tvmflow compile's, with the tuned
    schedules where they exist; recompiled when stale); otherwise a module with TVM's default
    schedules compiled into ``module_dir``.
    """
    from tvmflow.artifact.modules import ensure_module, module_from_package
    from tvmflow.measure.bench import BenchOptions, run
    from tvmflow.artifact.compile import compile as compile_variant
    say = on_step or (lambda _msg: None)
    if tuned:
        modules = [ensure_module(v.name, preset.name, seed=seed, say=say) for v in plan.unique()]
    else:
        modules = []
        for v in plan.unique():
            say(f"compiling {v.name} for {preset.name} (default schedules)")
            pkg = compile_variant(v.name, preset, output=module_dir / f"{v.name}.so", seed=seed,
                                  schedules=False)
            modules.append(module_from_package(v.name, pkg, compiled_now=True))
    opts = BenchOptions(rounds=rounds, min_repeats=rounds * repeat, min_time=0.0,
                        warmup=min(20, repeat), baselines=False, check=True)
    report = run(preset.name, modules, route, command="compare", options=opts, threads=threads,
                 say=say)
    samples, schedules = {}, {}
    for m in modules:
        res = report.result(m.variant)
        samples[m.variant] = [1e3 * float(t) for t in res.latency["tvm"].samples]
        schedules[m.variant] = m.schedules_text
    return samples, schedules, report.threads.get("tvm")


# ---------------------------------------------------------------------------- outputs


def write_csv(result: SweepResult, path: Path) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["align", "variant", "channels", "macs", "params", "p50_ms", "ci_low_ms",
                    "ci_high_ms", "samples", "schedules", "target"])
        for r in result.rows:
            w.writerow([r.align, r.variant, " ".join(map(str, r.channels)), r.macs, r.params,
                        f"{r.p50_ms:.6f}", f"{r.ci_low_ms:.6f}", f"{r.ci_high_ms:.6f}",
                        len(r.samples_ms), r.schedules, result.target])
    return path


def plot_sweep(result: SweepResult, path: Path) -> Path:
    """Latency p50 (with its 95 % CI) and MACs against N on two y-axes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = sorted(result.rows, key=lambda r: r.align)
    xs = [r.align for r in rows]
    p50 = np.array([r.p50_ms for r in rows])
    err = np.array([[r.p50_ms - r.ci_low_ms for r in rows], [r.ci_high_ms - r.p50_ms for r in rows]])
    macs = np.array([r.macs / 1e6 for r in rows])
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    ax.errorbar(xs, p50, yerr=err, marker="o", color="tab:blue", capsize=4,
                label="latency p50 (95% CI)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("channel alignment N (regular pruning to multiples of N)")
    ax.set_ylabel("latency p50 [ms]", color="tab:blue")
    ax.tick_params(axis="y", labelcolor="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(xs, macs, marker="s", linestyle="--", color="tab:orange", label="conv MACs")
    ax2.set_ylabel("conv MACs [M]", color="tab:orange")
    ax2.tick_params(axis="y", labelcolor="tab:orange")
    ref = result.reference()
    ax.axhline(ref.p50_ms, color="tab:blue", alpha=0.3, linewidth=1)
    faster = set(result.faster_with_more_macs())
    for r in rows:
        if r.align in faster:
            ax.plot([r.align], [r.p50_ms], marker="*", markersize=16, color="tab:green", zorder=5)
    if faster:
        ax.plot([], [], marker="*", markersize=12, linestyle="", color="tab:green",
                label=f"faster than N={ref.align} despite more MACs")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="lower left", fontsize=8)
    cpu = result.machine.get("name", "")
    ax.set_title(f"{result.source}: alignment sweep on {result.target} ({cpu})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
