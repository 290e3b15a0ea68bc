"""``tvmflow bench`` / ``tvmflow compare``: time compiled variants on a device, with baselines.

Both commands go through one path:

1. resolve the route (:func:`tvmflow.runtime.session.resolve_route`) and the modules (compiled with
   the tuned schedules when missing or stale, :func:`ensure_module`);
2. open ONE session (:func:`tvmflow.runtime.session.open_session`: local, a loopback RPC server
   started here, a server, or a tracker + key);
3. per variant: check the module's arch against the server's, upload, load, set the input,
   time the very first call on its own (first-run latency), check the output against PyTorch
   (``atol = rtol = 1e-4``), create the baselines (host targets: PyTorch eager and ONNX
   Runtime), warm every runner up.  Every runner gets the run's one thread count (the
   target's ``num-cores`` or ``--threads``, :mod:`tvmflow.threads`), and the count each
   runner's process reports is recorded (``environment["threads"]``);
4. measure in rounds.  ``compare`` interleaves the variants in every round (A B C D E, A B C
   D E, ...), so drift of the machine spreads over all of them; ``bench`` measures one variant
   after the other.  Within a variant TVM and its baselines alternate the same way.  Each
   round takes enough single runs that, over all rounds, every runner gets at least
   ``min_repeats`` samples and ``min_time`` seconds of measured runs -- except a runner so
   slow that this would take more than ``max_time`` seconds: it gets fewer samples (at least
   2 per round), and the report says so.

After every round the report so far is written to ``report.partial.json`` in the output
directory, so a board that dies mid-run loses nothing already measured: the run ends with a
TvmflowError that names the partial file.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import platform
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tvmflow import signals
from tvmflow.measure.baselines import GPU_BASELINES, LABELS
from tvmflow.errors import TvmflowError
from tvmflow.workspace import Workspace
from tvmflow.artifact.package import tvmflow_version
from tvmflow.measure.report import BenchReport, VariantResult, check_outputs
from tvmflow.runtime.session import Route, open_session, preflight
from tvmflow.threads import resolve as resolve_threads

Say = Callable[[str], None]
CALL_S = 0.5   # seconds of runs per time() call at most: a signal waits for a C++ call to return


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
        return asdict(self)


@dataclass
class ModuleRef:
    """A compiled module of one variant: the ``.so`` and what its sidecar says."""

    variant: str
    path: Path
    seed: int = 0
    trials: int | None = None
    checkpoint: str | None = None
    arch: str | None = None          # CPU arch the module was built for (x86_64, aarch64)
    sidecar: dict[str, Any] = field(default_factory=dict)
    compiled_now: bool = False
    coverage: str | None = None      # "tuned/tasks" of the module's tasks with a tuned schedule


# ---------------------------------------------------------------------------- modules


def _trials(sidecar: dict[str, Any]) -> int | None:
    """Tuning trials behind the module's schedules: the schedules' meta.json, else the sidecar.

    None: the module has no tuned schedules (TVM's default schedules).
    """
    import json
    sched = sidecar.get("schedules") or {}
    if not sched:
        return None
    for key in ("trials", "max_trials"):
        if isinstance(sched.get(key), int):
            return sched[key]
    path = sched.get("path")
    if path:
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
    if isinstance(sched.get("records"), int):
        return sched["records"]
    return None


def _schedule_set(sidecar: dict[str, Any]) -> dict[str, Any]:
    """Which CPU's schedule set the module was compiled with (the sidecar's record)."""
    sched = sidecar.get("schedules") or {}
    return {k: sched[k] for k in ("cpu", "running_on", "match", "pipeline") if k in sched}


def _coverage(sidecar: dict[str, Any]) -> str | None:
    cov = sidecar.get("coverage") or {}
    if isinstance(cov.get("tasks"), int):
        fixed = len(cov.get("fixed") or [])
        return f"{cov.get('tuned', 0)}/{cov['tasks']}" + (f" +{fixed} fixed" if fixed else "")
    return None


def module_from_package(variant: str, pkg, compiled_now: bool = False) -> ModuleRef:
    """A :class:`ModuleRef` from a ``tvmflow.artifact.package.Package`` (compile's result)."""
    from tvmflow.adapter.runtime import triple_arch
    sidecar = dict(pkg.sidecar or {})
    weights = sidecar.get("weights") or {}
    return ModuleRef(variant=variant, path=Path(pkg.path), seed=int(pkg.seed),
                     trials=_trials(sidecar), coverage=_coverage(sidecar),
                     checkpoint=weights.get("path") if weights.get("kind") != "random" else None,
                     arch=triple_arch(pkg.cpu_triple), sidecar=sidecar, compiled_now=compiled_now)


def ensure_module(variant: str, target: str, *, seed: int = 0, say: Say = _quiet,
                  cuda_graph: bool = False) -> ModuleRef:
    """The variant's compiled module for ``target`` (tvmflow compile's default output path).

    Compiled first (with the tuned schedules where they exist) when it is missing, or stale:
    another variant cfg, target preset, tvmflow version or schedule database, another seed,
    or compiled with(out) CUDA graphs when asked for the other.
    """
    from tvmflow.artifact.compile import compile as compile_variant
    from tvmflow.artifact.compile import cuda_graph_reason, default_output
    from tvmflow.artifact.package import Package, stale_reason
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


# ---------------------------------------------------------------------------- environment


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _gpu() -> str:
    try:
        import subprocess
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().replace("\n", "; ")
    except (OSError, Exception):
        pass
    return "none"


def _emulated_board(route: Route) -> bool:
    """Whether the route leads to a running emulated board (``tvmflow board start``)."""
    def norm(addr: str | None) -> str | None:
        if not addr:
            return None
        host, _, port = addr.rpartition(":")
        return f"{'127.0.0.1' if host in ('localhost', '::1') else host}:{port}"
    try:
        from tvmflow import board
        for info in board.running_boards():
            if route.mode == "tracker" and info.key == route.key and \
                    norm(info.tracker) == norm(route.address):
                return True
            if route.mode == "rpc" and norm(f"{info.host}:{info.port}") == norm(route.address):
                return True
    except Exception:  # board state unreadable: not emulated as far as we can tell
        return False
    return False


def environment(preset, route: Route, session=None, threads: int | None = None) -> dict[str, Any]:
    """What the report records about the run's machine, software and route.

    ``threads``: the thread count asked of every runner (``threads_requested``); the counts
    each runner's process reports go to ``threads`` once measured (:func:`thread_counts`).
    """
    from tvmflow import adapter
    from tvmflow.target.presets import _cpu_model, host_cores
    env: dict[str, Any] = {
        "tvmflow": tvmflow_version(), "tvm": adapter.tvm_version(),
        "tvm_ffi": adapter.ffi_version(), "torch": _version("torch"),
        "onnxruntime": _version("onnxruntime"), "numpy": np.__version__,
        "python": platform.python_version(), "host": socket.gethostname(),
        "os": f"{platform.system()} {platform.release()}", "cpu": _cpu_model(),
        "host_cores": host_cores(), "gpu": _gpu(), "target": preset.name,
        "target_dict": preset.target, "target_host": preset.host,
        "target_detected": preset.detected, "device": preset.device,
        "route": route.describe(), "route_mode": route.mode,
        "emulated": bool(preset.emulated) or _emulated_board(route),
    }
    if session is not None:
        env["server_address"] = session.address
        env["server_arch"] = session.arch()
        env["device_cpu"] = (env["cpu"] if route.mode in ("local", "local-rpc")
                             else preset.description)
    if threads is not None:
        env["threads_requested"] = int(threads)
    env["load_avg_start"] = list(os.getloadavg())
    governor = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    env["cpu_governor"] = governor.read_text().strip() if governor.exists() else "unknown"
    return env


# ---------------------------------------------------------------------------- runners


class _TvmRunner:
    """The TVM module as a runner (same interface as the baselines)."""

    kind = "tvm"
    label = "TVM"

    def __init__(self, variant: str, loaded):
        self.variant = variant
        self.loaded = loaded
        self.info = {"module": loaded.name, "route": loaded.session.mode}

    def first_run(self):
        return self.loaded.first_run()

    def run(self, n: int = 1):
        self.loaded.run(n)

    def time(self, repeat: int):
        return self.loaded.time(repeat)

    def close(self):
        pass


def _device_is_this_machine(route: Route) -> bool:
    """Baselines run in this process: only comparable when the device is this machine."""
    from tvmflow.adapter.rpc import is_loopback, parse_hostport
    if route.mode in ("local", "local-rpc"):
        return True
    return is_loopback(parse_hostport(route.address)[0])


def _check_output(got: np.ndarray, ref: np.ndarray, opts: BenchOptions, variant: str) -> dict:
    if got.shape != ref.shape:
        raise TvmflowError(f"{variant}: the module's output has shape {got.shape}, PyTorch's "
                           f"{ref.shape}; the module does not belong to this variant")
    err = float(np.max(np.abs(got.astype(np.float64) - ref)))
    ok = bool(np.allclose(got, ref, atol=opts.atol, rtol=opts.rtol))
    info = {"ok": ok, "max_abs_err": err, "atol": opts.atol, "rtol": opts.rtol,
            "reference": "PyTorch eager"}
    if not ok:
        raise TvmflowError(f"{variant}: the output on the device differs from PyTorch (max abs "
                           f"error {err:.3g} > atol {opts.atol:g} / rtol {opts.rtol:g}); not "
                           "timing a wrong module",
                           hint="recompile it (tvmflow compile --force) or pass --no-check")
    return info


def _repeats_per_round(est: float, opts: BenchOptions) -> int:
    by_count = math.ceil(opts.min_repeats / opts.rounds)
    by_time = math.ceil(opts.min_time / opts.rounds / max(est, 1e-7))
    n = max(by_count, by_time, 1)
    if n * opts.rounds * est > opts.max_time:       # a slow runner: cap its time, not forever
        n = max(2, int(opts.max_time / opts.rounds / max(est, 1e-7)))
    return int(min(n, opts.max_repeats_per_round))


# ---------------------------------------------------------------------------- the run


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
    from tvmflow.spec.registry import get_spec
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
    here = _device_is_this_machine(route)
    host_baselines = opts.baselines and preset.device == "cpu" and not preset.is_cross and here
    gpu_baselines = opts.baselines and preset.is_cuda and here
    baselines = "host" if host_baselines else "gpu" if gpu_baselines else None
    skipped: dict[str, str] = {}
    runners_per_variant: dict[str, list] = {}
    partial_path = None

    def save_partial():
        nonlocal partial_path
        if out_dir is not None:
            partial_path = report.save_partial(out_dir)

    boards = _check_boards(opts, route, command, len(modules))
    try:
        with contextlib.ExitStack() as stack:
            sessions = [stack.enter_context(open_session(route, device_kind=preset.device,
                                                         timeout=opts.timeout, threads=threads))
                        for _ in range(boards)]
            sess = sessions[0]
            start_load = report.environment["load_avg_start"]
            report.environment = environment(preset, route, sess, threads=threads)
            report.environment["load_avg_start"] = start_load
            # measured where TVM runs: runtime.NumThreads over RPC, or in this process
            tvm_threads = {id(s): s.use_threads(threads) for s in sessions}
            say(f"device: {route.describe()} (arch {sess.arch() or 'unknown'}, TVM threads "
                f"{', '.join(str(tvm_threads[id(s)]) for s in sessions)})")
            for mod in modules:
                spec = get_spec(mod.variant)
                report.results.append(VariantResult(mod.variant, spec.macs, spec.params,
                                                    str(mod.path), mod.trials,
                                                    coverage=mod.coverage,
                                                    schedules=_schedule_set(mod.sidecar)))
            # each board gets every boards-th variant; a variant is measured on one board only
            servers = [s.server_id() for s in sessions] if boards > 1 else [None]
            shares = [(s, srv, modules[i::boards])
                      for i, (s, srv) in enumerate(zip(sessions, servers))]
            if boards > 1:
                if len(set(servers)) < boards:
                    raise TvmflowError(f"the tracker handed out the same server twice for "
                                       f"key {route.key!r}")
                report.environment["boards"] = servers
                say(f"{boards} boards: " + "; ".join(
                    f"{', '.join(m.variant for m in mods)} on {srv}" for _, srv, mods in shares))

            def prepare(share):
                s, server, mods = share
                for mod in mods:
                    result = report.result(mod.variant)
                    runners_per_variant[mod.variant] = _prepare_variant(
                        mod, get_spec(mod.variant), s, result, opts, baselines, threads, say,
                        tvm_threads=tvm_threads[id(s)], skipped=skipped)
                    if server is not None:
                        result.runner_info["tvm"]["server"] = server
            _on_boards(prepare, shares)
            report.environment["threads"] = thread_counts(report)
            report.environment["baselines"] = (
                f"PyTorch eager + ONNX Runtime in the host process, {threads} threads"
                if host_baselines else
                "on this machine's GPU, timed with CUDA events: " + (", ".join(
                    LABELS[k] for k in GPU_BASELINES if k not in skipped) or "none")
                if gpu_baselines else "off (" + (
                    "--no-baselines" if not opts.baselines else
                    "not a host CPU or CUDA target" if preset.is_cross and not preset.is_cuda
                    else "the device is not this machine") + ")")
            if skipped:
                report.environment["baselines_skipped"] = dict(skipped)
            report.environment["cuda_graph"] = {m.variant: bool((m.sidecar.get("cuda") or {})
                                                                .get("cuda_graph"))
                                                for m in modules} if preset.is_cuda else None
            report.environment["trials"] = {m.variant: m.trials for m in modules}
            report.environment["seeds"] = {m.variant: m.seed for m in modules}
            save_partial()
            lock = threading.Lock()

            def save_locked():
                with lock:
                    save_partial()

            def measure(share):
                _measure(report, {m.variant: runners_per_variant[m.variant] for m in share[2]},
                         opts, interleave=(command == "compare"), say=say,
                         after_round=save_locked)
            _on_boards(measure, shares)
    except TvmflowError as exc:
        if any(lat.n for r in report.results for lat in r.latency.values()):
            report.partial, report.error = True, str(exc)
            if out_dir is not None:
                partial_path = report.save_partial(out_dir)
                signals.kept(f"the partial results measured so far are in {partial_path}")
                raise TvmflowError(f"{exc.message}; the partial results measured so far are in "
                                   f"{partial_path}", hint=exc.hint) from None
        elif partial_path is not None:        # nothing measured: no partial report to keep
            Path(partial_path).unlink(missing_ok=True)
        raise
    except KeyboardInterrupt:
        report.partial, report.error = True, "interrupted"
        if out_dir is not None and any(lat.n for r in report.results for lat in r.latency.values()):
            signals.kept(f"the partial results measured so far are in {report.save_partial(out_dir)}")
        elif partial_path is not None:        # nothing measured: no partial report to keep
            Path(partial_path).unlink(missing_ok=True)
        raise
    finally:
        for runners in runners_per_variant.values():
            for r in runners:
                r.close()
    report.environment["load_avg_end"] = list(os.getloadavg())
    report.environment["output_dir"] = str(out_dir) if out_dir is not None else None
    if out_dir is not None:
        report.save(out_dir, force=True)
    return report


def _check_boards(opts: BenchOptions, route: Route, command: str, n_variants: int) -> int:
    """How many boards to use: ``--boards`` checked against the route and the tracker."""
    boards = int(opts.boards)
    if boards == 1:
        return 1
    if command == "compare":
        raise TvmflowError("compare measures every variant on one board, interleaved in rounds; "
                           "--boards is for bench", hint="drop --boards, or use `tvmflow bench`")
    if route.mode != "tracker":
        raise TvmflowError("--boards needs a tracker: boards are found under a key",
                           hint="pass --tracker HOST:PORT --key KEY (or set TVM_TRACKER_*)")
    from tvmflow.adapter import rpc
    host, port = rpc.parse_hostport(route.address)
    free = rpc.count_servers(host, port, route.key, timeout=opts.timeout)
    if free < boards:
        raise TvmflowError(f"--boards {boards}: the tracker at {route.address} has {free} "
                           f"server(s) registered under key {route.key!r}",
                           hint="start more boards under the key, or ask for fewer")
    return min(boards, n_variants)


def _on_boards(fn: Callable[[Any], None], shares: list) -> None:
    """``fn(share)`` for each board's share, in parallel threads when there are several;
    the first error is raised here once all threads have stopped."""
    if len(shares) == 1:
        fn(shares[0])
        return
    errors: list[BaseException] = []

    def work(share):
        try:
            fn(share)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(exc)
    threads = [threading.Thread(target=work, args=(sh,), daemon=True) for sh in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise next((e for e in errors if isinstance(e, TvmflowError)), errors[0])


def _prepare_variant(mod: ModuleRef, spec, sess, result: VariantResult, opts: BenchOptions,
                     baselines: str | None, threads: int, say: Say,
                     tvm_threads: int | None = None, skipped: dict[str, str] | None = None) -> list:
    """Load, first-run and check the module; make its baselines (``baselines``: "host" for
    PyTorch / ONNX Runtime on the CPU, "gpu" for the GPU ones, None); a GPU baseline that
    cannot run is left out, its reason in ``skipped``."""
    from tvmflow.measure.baselines import make_baselines, make_gpu_baselines
    from tvmflow.ir.frontend import torch_model_for
    from tvmflow.spec.nin import example_input
    seed = mod.seed
    x = example_input(spec, mod.seed if opts.seed is None else opts.seed).numpy()
    say(f"{mod.variant}: uploading and loading {mod.path.name}")
    loaded = sess.load(mod.path, expected_arch=mod.arch)
    loaded.set_input(x)
    tvm_runner = _TvmRunner(mod.variant, loaded)
    tvm_runner.info.update(threads=threads, threads_measured=tvm_threads)
    result.first_run["tvm"] = tvm_runner.first_run()
    model = None
    if opts.check or baselines:
        model = torch_model_for(spec, seed).eval()
    if opts.check:
        import torch
        with torch.inference_mode():
            ref = model(torch.from_numpy(x)).numpy().astype(np.float64)
        result.check = _check_output(loaded.output(), ref, opts, mod.variant)
    else:
        result.check = {"ok": None, "skipped": True}
    runners = [tvm_runner]
    made: list = []
    if baselines == "host":
        made = make_baselines(mod.variant, model, x, threads)
    elif baselines == "gpu":
        made, left_out = make_gpu_baselines(mod.variant, model, x, threads)
        for kind, why in left_out.items():
            say(f"{mod.variant}: baseline {LABELS.get(kind, kind)} left out: {why}")
            if skipped is not None:
                skipped.setdefault(kind, why)
    for b in made:
        result.first_run[b.kind] = b.first_run()
        b.info["threads_measured"] = b.measured_threads()
        runners.append(b)
    for r in runners:
        result.runner_info[r.kind] = dict(r.info)
    return runners


def thread_counts(report: BenchReport) -> dict[str, Any]:
    """Per runner (``tvm``, ``pytorch``, ``onnxruntime``) the thread count its process
    reported; a list when variants (boards) disagree."""
    from tvmflow.threads import REPORT_KEYS
    counts: dict[str, list[int]] = {}
    for r in report.results:
        for kind, info in r.runner_info.items():
            value = info.get("threads_measured")
            if isinstance(value, int):
                seen = counts.setdefault(REPORT_KEYS.get(kind, kind), [])
                if value not in seen:
                    seen.append(value)
    return {k: v[0] if len(v) == 1 else sorted(v) for k, v in counts.items()}


def _measure(report: BenchReport, runners_per_variant: dict[str, list], opts: BenchOptions, *,
             interleave: bool, say: Say, after_round: Callable[[], None]) -> None:
    from tvmflow.measure.stats import Latency
    # warm up and estimate each runner's latency (decides the repeats per round)
    est: dict[tuple[str, str], int] = {}  # repeats per round
    per_call: dict[tuple[str, str], int] = {}  # repeats per time() call: ~CALL_S each
    for variant, runners in runners_per_variant.items():
        for r in runners:
            if opts.warmup:
                r.run(opts.warmup)
            probe = r.time(max(1, min(5, opts.min_repeats)))
            per_call[(variant, r.kind)] = max(1, int(CALL_S / max(float(np.median(probe)), 1e-7)))
            est[(variant, r.kind)] = n = _repeats_per_round(float(np.median(probe)), opts)
            if n * opts.rounds < opts.min_repeats:
                report.result(variant).runner_info.setdefault(r.kind, {})["capped"] = (
                    f"{n * opts.rounds} runs instead of {opts.min_repeats}: ~"
                    f"{float(np.median(probe)) * 1e3:.0f} ms per run, --max-time {opts.max_time:g} s")
            report.result(variant).latency[r.kind] = Latency(np.empty(0))
            time.sleep(opts.settle)
    variants = list(runners_per_variant)
    groups = [variants] if interleave else [[v] for v in variants]
    for group in groups:
        for rnd in range(opts.rounds):
            for variant in group:
                result = report.result(variant)
                for r in runners_per_variant[variant]:
                    n, step = est[(variant, r.kind)], per_call[(variant, r.kind)]
                    for done in range(0, n, step):  # Ctrl-C lands between bounded calls
                        signals.check()
                        result.latency[r.kind].extend(r.time(min(step, n - done)))
                    time.sleep(opts.settle)
            say(f"round {rnd + 1}/{opts.rounds}: " + ", ".join(
                f"{v} {report.result(v).p50() * 1e3:.3f} ms" for v in group))
            after_round()


# ---------------------------------------------------------------------------- front doors


def default_out_dir(command: str, target: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Workspace.current().reports / f"{command}-{target}-{stamp}"


def bench(target: str, variants: list[str] | str = "all", *, via: str | None = None,
          rpc: str | None = None, tracker: str | None = None, key: str | None = None,
          command: str = "bench", options: BenchOptions | None = None,
          out_dir: str | Path | None = None, force: bool = False, seed: int = 0,
          threads: int | None = None, say: Say = _quiet, cuda_graph: bool = False) -> BenchReport:
    """``tvmflow bench`` / ``compare``: resolve route and modules, then :func:`run`.

    ``threads`` (``--threads``) overrides the thread count of all runners alike (TVM, PyTorch,
    ONNX Runtime); default: the target's ``num-cores`` (see :mod:`tvmflow.threads`).
    ``cuda_graph`` (CUDA targets): time modules compiled with ``--cuda-graph`` (compiled
    so when the existing ones are not).
    """
    from tvmflow.spec.registry import resolve_variants
    from tvmflow.runtime.session import resolve_route
    from tvmflow.target.presets import get_target
    preset = get_target(target)
    threads = resolve_threads(preset, threads)          # a bad --threads fails before compiling
    from tvmflow.artifact.compile import check_cuda_graph
    check_cuda_graph(preset, cuda_graph)
    # host modules run in a separate RPC server process by default: TVM's thread pool then
    # does not share a process with the PyTorch / ONNX Runtime baselines (or a compile)
    default_via = "rpc" if not preset.is_cross and preset.device == "cpu" else "local"
    route = resolve_route(via=via, rpc=rpc, tracker=tracker, key=key,
                          default_key=preset.rpc_key, default_via=default_via)
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
    if out_dir is None:
        out_dir = default_out_dir(command, preset.name)
    check_outputs(out_dir, force)
    names = resolve_variants(variants)
    opts = options or BenchOptions()
    # an unreachable board, or one of another architecture, fails before the compile
    from tvmflow.adapter.runtime import triple_arch
    preflight(route, opts.timeout, arch=triple_arch(preset.cpu_triple), target=preset.name)
    modules = [ensure_module(v, preset.name, seed=seed, say=say, cuda_graph=cuda_graph)
               for v in names]
    return run(preset.name, modules, route, command=command, options=options, out_dir=out_dir,
               force=force, threads=threads, say=say)


def compare(target: str = "host", variants: list[str] | str = "all", *,
            per_layer: str | list[str] | None = None, **kwargs) -> BenchReport:
    """``tvmflow compare``: :func:`bench` with the variants measured interleaved in rounds,
    the speed-up table and the alignment line.

    ``per_layer`` ("A,B", e.g. ``"pruned,pruned-a8"``) adds the layer-by-layer side-by-side of
    two variants (:func:`tvmflow.measure.profile.compare_profiles`, on this machine), written next to
    the report as ``per_layer.json`` / ``per_layer.md``.
    """
    pair = _per_layer_pair(per_layer, target)
    from tvmflow.target.presets import get_target
    threads = resolve_threads(get_target(target), kwargs.pop("threads", None))
    report = bench(target, variants, command="compare", threads=threads, **kwargs)
    if pair:
        from tvmflow.measure.profile import compare_profiles, write_json
        report.per_layer = compare_profiles(pair, target, rounds=10, seed=kwargs.get("seed", 0),
                                            threads=threads)
        out = report.environment.get("output_dir")
        if out:
            write_json(report.per_layer, Path(out) / "per_layer.json")
            (Path(out) / "per_layer.md").write_text(report.per_layer.markdown())
    return report


def _per_layer_pair(per_layer: str | list[str] | None, target: str) -> list[str] | None:
    """Check ``--per-layer A,B`` before any measuring."""
    if not per_layer:
        return None
    from tvmflow.spec.registry import get_spec
    from tvmflow.target.presets import get_target
    names = [v.strip() for v in (per_layer.split(",") if isinstance(per_layer, str)
                                  else per_layer) if v.strip()]
    if len(names) != 2:
        raise TvmflowError(f"--per-layer takes two variants, e.g. pruned,pruned-a8; got {per_layer!r}")
    for n in names:
        get_spec(n)                         # unknown names fail here, with suggestions
    preset = get_target(target)
    if preset.is_cross:
        raise TvmflowError(f"--per-layer profiles on this machine; target {preset.name} is for "
                           f"{preset.cpu_triple}", hint="use it with --target host")
    return names
