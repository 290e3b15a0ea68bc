"""``tvmflow bench``: time compiled variants on a device, with baselines.

One path for bench and for compare (:mod:`tvmflow.experiments.compare`, which interleaves):

1. resolve the route (:func:`tvmflow.runtime.session.resolve_route`) and the modules (compiled
   with the tuned schedules when missing or stale, :func:`tvmflow.artifact.modules.ensure_module`);
2. open ONE session per board (:func:`tvmflow.runtime.session.open_session`: local, a loopback
   RPC server started here, a server, or a tracker + key);
3. per variant (:func:`tvmflow.measure.rounds.prepare_variant`): check the module's arch
   against the server's, upload, load, set the input, time the very first call on its own
   (first-run latency), check the output against PyTorch (``atol = rtol = 1e-4``), create the
   baselines (host targets: PyTorch eager and ONNX Runtime), warm every runner up.  Every
   runner gets the run's one thread count (the target's ``num-cores`` or ``--threads``,
   :mod:`tvmflow.threads`), and the count each runner's process reports is recorded
   (``environment["threads"]``);
4. measure in rounds (:func:`tvmflow.measure.rounds.measure`).

After every round the report so far is written to ``report.partial.json`` in the output
directory, so a board that dies mid-run loses nothing already measured: the run ends with a
TvmflowError that names the partial file.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from tvmflow import signals
from tvmflow.errors import TvmflowError
from tvmflow.workspace import Workspace
from tvmflow.artifact.modules import ModuleRef, ensure_module
from tvmflow.measure import rounds
from tvmflow.measure.baselines import GPU_BASELINES, LABELS
from tvmflow.measure.environment import device_is_this_machine, environment
from tvmflow.measure.report import BenchReport, VariantResult, check_outputs
from tvmflow.runtime.session import Route, open_session, preflight
from tvmflow.threads import resolve as resolve_threads

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class BenchOptions:
    """Measurement settings (CLI options with these defaults)."""

    warmup: int = 20             # untimed runs per runner before measuring
    min_repeats: int = 200       # at least this many timed single runs per runner
    min_time: float = 1.0        # ... and at least this many seconds of timed runs per runner
    max_time: float = 15.0       # but a slow runner stops at ~this many seconds (>= 2 runs/round)
    rounds: int = 10             # rounds of interleaved measurement
    max_repeats_per_round: int = 5000
    baselines: bool = True       # PyTorch eager + ONNX Runtime (host targets)
    check: bool = True           # output vs PyTorch before timing
    atol: float = 1e-4
    rtol: float = 1e-4
    settle: float = 0.02         # seconds of idle between runners (lets spinning threads sleep)
    timeout: float = 30.0        # connect / request / registration waits
    seed: int | None = None      # input seed (default: the module's weight seed)
    boards: int = 1              # bench through a tracker: spread the variants over N boards
    pair: tuple[str, str] | None = None   # compare: the two variants whose ratio is reported

    def __post_init__(self):
        for name in ("warmup", "min_repeats", "rounds"):
            if int(getattr(self, name)) < (0 if name == "warmup" else 1):
                raise TvmflowError(f"--{name.replace('_', '-')} must be "
                                   f"{'>= 0' if name == 'warmup' else '>= 1'}")
        if self.min_time < 0:
            raise TvmflowError("--min-time must be >= 0")
        if self.max_time < self.min_time:
            raise TvmflowError("--max-time must be >= --min-time")
        if int(self.boards) < 1:
            raise TvmflowError("--boards must be >= 1")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["pair"] = list(self.pair) if self.pair else None
        return data


@dataclass
class _Run:
    """One bench run's state: the report, its runners, and the partial report on disk."""

    report: BenchReport
    opts: BenchOptions
    preset: Any
    threads: int
    baselines: str | None          # "host", "gpu" or None
    out_dir: Path | None
    say: Say
    runners: dict[str, list] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    partial: Path | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def save_partial(self) -> None:
        with self.lock:
            if self.out_dir is not None:
                self.partial = self.report.save_partial(self.out_dir)

    def failed(self, exc: TvmflowError) -> None:
        """Keep what was measured (``report.partial.json``) and say where; else drop the
        partial file this run wrote."""
        if any(lat.n for r in self.report.results for lat in r.latency.values()):
            self.report.partial, self.report.error = True, str(exc)
            if self.out_dir is not None:
                path = self.report.save_partial(self.out_dir)
                signals.kept(f"the partial results measured so far are in {path}")
                raise TvmflowError(f"{exc.message}; the partial results measured so far are "
                                   f"in {path}", hint=exc.hint) from None
        elif self.partial is not None:        # nothing measured: no partial report to keep
            Path(self.partial).unlink(missing_ok=True)

    def interrupted(self) -> None:
        self.report.partial, self.report.error = True, "interrupted"
        if self.out_dir is not None and any(lat.n for r in self.report.results
                                            for lat in r.latency.values()):
            path = self.report.save_partial(self.out_dir)
            signals.kept(f"the partial results measured so far are in {path}")
        elif self.partial is not None:        # nothing measured: no partial report to keep
            Path(self.partial).unlink(missing_ok=True)

    def close(self) -> None:
        for runners in self.runners.values():
            for r in runners:
                r.close()


def _baseline_kind(opts: BenchOptions, preset, route: Route) -> str | None:
    """Baselines run in this process: "host" (PyTorch / ONNX Runtime on the CPU) or "gpu"
    when the device is this machine, else None."""
    if not opts.baselines or not device_is_this_machine(route):
        return None
    if preset.device == "cpu" and not preset.is_cross:
        return "host"
    return "gpu" if preset.is_cuda else None


def _baselines_text(run: _Run) -> str:
    if run.baselines == "host":
        return f"PyTorch eager + ONNX Runtime in the host process, {run.threads} threads"
    if run.baselines == "gpu":
        return "on this machine's GPU, timed with CUDA events: " + (", ".join(
            LABELS[k] for k in GPU_BASELINES if k not in run.skipped) or "none")
    why = ("--no-baselines" if not run.opts.baselines else
           "not a host CPU or CUDA target" if run.preset.is_cross and not run.preset.is_cuda
           else "the device is not this machine")
    return f"off ({why})"


def _shares(run: _Run, sessions: list, modules: list[ModuleRef], route: Route) -> list:
    """Each board's ``(session, server id, modules)``: every boards-th variant."""
    boards = len(sessions)
    servers = [s.server_id() for s in sessions] if boards > 1 else [None]
    shares = [(s, srv, modules[i::boards]) for i, (s, srv) in enumerate(zip(sessions, servers))]
    if boards > 1:
        if len(set(servers)) < boards:
            raise TvmflowError(f"the tracker handed out the same server twice for "
                               f"key {route.key!r}")
        run.report.environment["boards"] = servers
        run.say(f"{boards} boards: " + "; ".join(
            f"{', '.join(m.variant for m in mods)} on {srv}" for _, srv, mods in shares))
    return shares


def _start(run: _Run, sessions: list, modules: list[ModuleRef], route: Route) -> dict[int, int]:
    """Record the environment with the session, set TVM's threads where it runs (the counts
    measured there, per session) and add a result per module."""
    from tvmflow.spec.registry import get_spec
    env = run.report.environment
    start_load = env["load_avg_start"]
    run.report.environment = environment(run.preset, route, sessions[0], threads=run.threads)
    run.report.environment["load_avg_start"] = start_load
    # measured where TVM runs: runtime.NumThreads over RPC, or in this process
    tvm_threads = {id(s): s.use_threads(run.threads) for s in sessions}
    run.say(f"device: {route.describe()} (arch {sessions[0].arch() or 'unknown'}, TVM threads "
            f"{', '.join(str(tvm_threads[id(s)]) for s in sessions)})")
    for mod in modules:
        spec = get_spec(mod.variant)
        run.report.results.append(VariantResult(mod.variant, spec.macs, spec.params,
                                                str(mod.path), mod.trials,
                                                coverage=mod.coverage,
                                                schedules=dict(mod.schedule_set)))
    return tvm_threads


def _prepare(run: _Run, shares: list, tvm_threads: dict[int, int],
             modules: list[ModuleRef]) -> None:
    """Load, check and warm every variant's runners (on its board), then record the runners'
    thread counts and what the baselines were."""
    from tvmflow.spec.registry import get_spec

    def prepare(share):
        sess, server, mods = share
        for mod in mods:
            result = run.report.result(mod.variant)
            run.runners[mod.variant] = rounds.prepare_variant(
                mod, get_spec(mod.variant), sess, result, run.opts, run.baselines, run.threads,
                run.say, tvm_threads=tvm_threads[id(sess)], skipped=run.skipped)
            if server is not None:
                result.runner_info["tvm"]["server"] = server
    rounds.on_boards(prepare, shares)
    env = run.report.environment
    env["threads"] = rounds.thread_counts(run.report)
    env["baselines"] = _baselines_text(run)
    if run.skipped:
        env["baselines_skipped"] = dict(run.skipped)
    env["cuda_graph"] = ({m.variant: m.cuda_graph for m in modules}
                         if run.preset.is_cuda else None)
    env["trials"] = {m.variant: m.trials for m in modules}
    env["seeds"] = {m.variant: m.seed for m in modules}


def _measure(run: _Run, shares: list, interleave: bool) -> None:
    def measure(share):
        rounds.measure(run.report, {m.variant: run.runners[m.variant] for m in share[2]},
                       run.opts, interleave=interleave, say=run.say,
                       after_round=run.save_partial)
    rounds.on_boards(measure, shares)


def run(target: str, modules: list[ModuleRef], route: Route, *, command: str = "bench",
        options: BenchOptions | None = None, out_dir: str | Path | None = None,
        force: bool = False, threads: int | None = None, say: Say = _quiet) -> BenchReport:
    """Measure ``modules`` on the device behind ``route``; returns the (saved) report.

    ``command="compare"`` interleaves variants in each round; ``"bench"`` measures them one
    after the other.  With ``out_dir`` the report files are written there (existing ones need
    ``force``) and partial results are saved after every round.  ``threads``: the thread
    count of every runner (default: :func:`tvmflow.threads.resolve`, the target's
    ``num-cores``); what each runner's process reports is in ``environment["threads"]``.
    """
    from tvmflow.target.presets import get_target
    opts = options or BenchOptions()
    preset = get_target(target)
    if out_dir is not None:
        check_outputs(out_dir, force)
    if not modules:
        raise TvmflowError("nothing to benchmark: no variants given")
    report = BenchReport(command=command, target=preset.name, options=opts.to_json(),
                         created=_dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                         seed=modules[0].seed if opts.seed is None else opts.seed)
    # one thread count for every runner: TVM (here or on the server), PyTorch, ONNX Runtime
    threads = resolve_threads(preset, threads)
    report.environment = environment(preset, route, threads=threads)
    state = _Run(report, opts, preset, threads, _baseline_kind(opts, preset, route),
                 Path(out_dir) if out_dir is not None else None, say)
    boards = rounds.check_boards(opts, route, command, len(modules))
    try:
        with contextlib.ExitStack() as stack:
            sessions = [stack.enter_context(open_session(route, device_kind=preset.device,
                                                         timeout=opts.timeout, threads=threads))
                        for _ in range(boards)]
            tvm_threads = _start(state, sessions, modules, route)
            shares = _shares(state, sessions, modules, route)
            _prepare(state, shares, tvm_threads, modules)
            state.save_partial()
            _measure(state, shares, interleave=(command == "compare"))
    except TvmflowError as exc:
        state.failed(exc)
        raise
    except KeyboardInterrupt:
        state.interrupted()
        raise
    finally:
        state.close()
    report.environment["load_avg_end"] = list(os.getloadavg())
    report.environment["output_dir"] = str(out_dir) if out_dir is not None else None
    if out_dir is not None:
        report.save(out_dir, force=True)
    return report


# ---------------------------------------------------------------------------- front door


def default_out_dir(command: str, target: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Workspace.current().reports / f"{command}-{target}-{stamp}"


def _route(preset, command: str, **where) -> Route:
    """The route for ``preset`` (``where``: via / rpc / tracker / key), refused before any
    compile when the device cannot be this machine."""
    from tvmflow.runtime.session import resolve_route
    # host modules run in a separate RPC server process by default: TVM's thread pool then
    # does not share a process with the PyTorch / ONNX Runtime baselines (or a compile)
    default_via = "rpc" if not preset.is_cross and preset.device == "cpu" else "local"
    route = resolve_route(**where, default_key=preset.rpc_key, default_via=default_via)
    if route.mode in ("local", "local-rpc") and preset.is_cross:
        raise TvmflowError(f"target {preset.name} runs on {preset.cpu_triple.split('-')[0]}, not "
                           "on this machine", hint="give the board: --tracker HOST:PORT --key K "
                           "or --rpc HOST:PORT")
    if route.mode in ("local", "local-rpc") and preset.is_cuda:
        from tvmflow.adapter.cuda import probe_gpu
        gpu = probe_gpu()                 # before compiling: name what is missing
        if not gpu.ok:
            raise TvmflowError(f"cannot {command} {preset.name} here: no CUDA GPU on this "
                               f"machine: {gpu.missing}",
                               hint="give the GPU machine: --tracker HOST:PORT --key K or "
                                    "--rpc HOST:PORT")
    return route


def bench(target: str, variants: list[str] | str = "all", *, via: str | None = None,
          rpc: str | None = None, tracker: str | None = None, key: str | None = None,
          command: str = "bench", options: BenchOptions | None = None,
          out_dir: str | Path | None = None, force: bool = False, seed: int = 0,
          threads: int | None = None, say: Say = _quiet, cuda_graph: bool = False) -> BenchReport:
    """``tvmflow bench`` (and compare's measuring): resolve route and modules, then :func:`run`.

    ``threads`` (``--threads``) overrides the thread count of all runners alike (TVM, PyTorch,
    ONNX Runtime); default: the target's ``num-cores`` (see :mod:`tvmflow.threads`).
    ``cuda_graph`` (CUDA targets): time modules compiled with ``--cuda-graph`` (compiled
    so when the existing ones are not).
    """
    from tvmflow.adapter.arch import triple_arch
    from tvmflow.artifact.compile import check_cuda_graph
    from tvmflow.spec.registry import resolve_variants
    from tvmflow.target.presets import get_target
    preset = get_target(target)
    threads = resolve_threads(preset, threads)          # a bad --threads fails before compiling
    check_cuda_graph(preset, cuda_graph)
    route = _route(preset, command, via=via, rpc=rpc, tracker=tracker, key=key)
    if out_dir is None:
        out_dir = default_out_dir(command, preset.name)
    check_outputs(out_dir, force)
    names = resolve_variants(variants)
    opts = options or BenchOptions()
    # an unreachable board, or one of another architecture, fails before the compile
    preflight(route, opts.timeout, arch=triple_arch(preset.cpu_triple), target=preset.name)
    rounds.check_boards(opts, route, command, len(names))     # --boards, before the compile
    modules = [ensure_module(v, preset.name, seed=seed, say=say, cuda_graph=cuda_graph)
               for v in names]
    return run(preset.name, modules, route, command=command, options=options, out_dir=out_dir,
               force=force, threads=threads, say=say)
