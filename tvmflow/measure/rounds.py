"""The measuring half of ``bench`` / ``compare``: runners, their preparation, and the rounds.

Every runner -- the TVM module (:class:`TvmRunner`, a loaded module of the one runtime
session) and the baselines (:mod:`tvmflow.measure.baselines`) -- has the same interface
(``first_run``, ``run``, ``time``, ``close``), so they interleave in rounds.  Each round takes
enough single runs that, over all rounds, every runner gets at least ``min_repeats`` samples
and ``min_time`` seconds of measured runs -- except a runner so slow that this would take
more than ``max_time`` seconds: it gets fewer samples (at least 2 per round), and the report
says so.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable

import numpy as np

from tvmflow import signals
from tvmflow.errors import TvmflowError
from tvmflow.artifact.modules import ModuleRef
from tvmflow.measure.baselines import LABELS
from tvmflow.measure.report import BenchReport, VariantResult

Say = Callable[[str], None]
CALL_S = 0.5   # seconds of runs per time() call at most: a signal waits for a C++ call to return


class TvmRunner:
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


def check_output(got: np.ndarray, ref: np.ndarray, opts, variant: str,
                 reference: str = "PyTorch eager") -> dict:
    """The module's output against the reference's (PyTorch, or ONNX Runtime on an ONNX
    variant; ``opts.atol`` / ``opts.rtol``); a wrong module is an error, not a timing."""
    if got.shape != ref.shape:
        raise TvmflowError(f"{variant}: the module's output has shape {got.shape}, "
                           f"{reference}'s {ref.shape}; the module does not belong to this variant")
    err = float(np.max(np.abs(got.astype(np.float64) - ref)))
    ok = bool(np.allclose(got, ref, atol=opts.atol, rtol=opts.rtol))
    info = {"ok": ok, "max_abs_err": err, "atol": opts.atol, "rtol": opts.rtol,
            "reference": reference}
    if not ok:
        raise TvmflowError(f"{variant}: the output on the device differs from {reference} "
                           f"(max abs error {err:.3g} > atol {opts.atol:g} / rtol {opts.rtol:g}); "
                           "not timing a wrong module",
                           hint="recompile it (tvmflow compile --force) or pass --no-check")
    return info


def _reference(spec, model, x: np.ndarray) -> np.ndarray:
    """What the module must match: the PyTorch module's output, or ONNX Runtime's on an
    ONNX variant's own file."""
    if model is None:
        from tvmflow.ir.frontend import onnx_reference
        return onnx_reference(spec, x).astype(np.float64)
    import torch
    with torch.inference_mode():
        return model.eval()(torch.from_numpy(x)).numpy().astype(np.float64)


def _baselines(mod: ModuleRef, model, x, kind: str | None, threads: int, say: Say,
               skipped: dict[str, str] | None, onnx_file: str | None = None) -> list:
    """The baseline runners of ``kind`` ("host", "gpu" or None); a GPU baseline that cannot
    run is left out, its reason in ``skipped``."""
    from tvmflow.measure.baselines import make_baselines, make_gpu_baselines
    if kind == "host":
        return make_baselines(mod.variant, model, x, threads, onnx_file=onnx_file,
                              skipped=skipped)
    if kind != "gpu":
        return []
    made, left_out = make_gpu_baselines(mod.variant, model, x, threads)
    for name, why in left_out.items():
        say(f"{mod.variant}: baseline {LABELS.get(name, name)} left out: {why}")
        if skipped is not None:
            skipped.setdefault(name, why)
    return made


def prepare_variant(mod: ModuleRef, spec, sess, result: VariantResult, opts,
                    baselines: str | None, threads: int, say: Say,
                    tvm_threads: int | None = None, skipped: dict[str, str] | None = None) -> list:
    """Load, first-run and check the module; make its baselines (``baselines``: "host" for
    PyTorch / ONNX Runtime on the CPU, "gpu" for the GPU ones, None)."""
    from tvmflow.ir.frontend import torch_model_for
    from tvmflow.spec.nin import example_input
    x = example_input(spec, mod.seed if opts.seed is None else opts.seed).numpy()
    say(f"{mod.variant}: uploading and loading {mod.path.name}")
    loaded = sess.load(mod.path, expected_arch=mod.arch)
    loaded.set_input(x)
    tvm_runner = TvmRunner(mod.variant, loaded)
    tvm_runner.info.update(threads=threads, threads_measured=tvm_threads)
    result.first_run["tvm"] = tvm_runner.first_run()
    onnx_file = spec.ref if getattr(spec, "scheme", None) == "onnx" else None
    model = (torch_model_for(spec, mod.seed) if (opts.check or baselines) and onnx_file is None
             else None)
    if opts.check:
        result.check = check_output(loaded.output(), _reference(spec, model, x), opts,
                                    mod.variant, "ONNX Runtime" if onnx_file else "PyTorch eager")
    else:
        result.check = {"ok": None, "skipped": True}
    runners = [tvm_runner]
    for b in _baselines(mod, model, x, baselines, threads, say, skipped, onnx_file):
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


def repeats_per_round(est: float, opts) -> int:
    by_count = math.ceil(opts.min_repeats / opts.rounds)
    by_time = math.ceil(opts.min_time / opts.rounds / max(est, 1e-7))
    n = max(by_count, by_time, 1)
    if n * opts.rounds * est > opts.max_time:       # a slow runner: cap its time, not forever
        n = max(2, int(opts.max_time / opts.rounds / max(est, 1e-7)))
    return int(min(n, opts.max_repeats_per_round))


def _warm_up(report: BenchReport, runners_per_variant: dict[str, list], opts
             ) -> dict[tuple[str, str], tuple[int, int]]:
    """Warm every runner up and estimate its latency: the repeats it gets per round, and per
    time() call."""
    from tvmflow.measure.stats import Latency
    est: dict[tuple[str, str], tuple[int, int]] = {}
    for variant, runners in runners_per_variant.items():
        for r in runners:
            if opts.warmup:
                r.run(opts.warmup)
            probe = float(np.median(r.time(max(1, min(5, opts.min_repeats)))))
            n = repeats_per_round(probe, opts)
            # and per time() call at most ~CALL_S: a signal waits for the C++ call to return
            est[(variant, r.kind)] = (n, max(1, int(CALL_S / max(probe, 1e-7))))
            if n * opts.rounds < opts.min_repeats:
                report.result(variant).runner_info.setdefault(r.kind, {})["capped"] = (
                    f"{n * opts.rounds} runs instead of {opts.min_repeats}: ~"
                    f"{probe * 1e3:.0f} ms per run, --max-time {opts.max_time:g} s")
            report.result(variant).latency[r.kind] = Latency(np.empty(0))
            time.sleep(opts.settle)
    return est


def measure(report: BenchReport, runners_per_variant: dict[str, list], opts, *,
            interleave: bool, say: Say, after_round: Callable[[], None]) -> None:
    """Time the runners in ``opts.rounds`` rounds: all variants in every round
    (``interleave``, compare: A B C, A B C, ...) or one variant's rounds after the other's
    (bench); within a variant its runners alternate."""
    est = _warm_up(report, runners_per_variant, opts)
    variants = list(runners_per_variant)
    groups = [variants] if interleave else [[v] for v in variants]
    for group in groups:
        for rnd in range(opts.rounds):
            for variant in group:
                result = report.result(variant)
                for r in runners_per_variant[variant]:
                    n, step = est[(variant, r.kind)]
                    for done in range(0, n, step):  # Ctrl-C lands between bounded calls
                        signals.check()
                        result.latency[r.kind].extend(r.time(min(step, n - done)))
                    time.sleep(opts.settle)
            say(f"round {rnd + 1}/{opts.rounds}: " + ", ".join(
                f"{v} {report.result(v).p50() * 1e3:.3f} ms" for v in group))
            after_round()


def check_boards(opts, route, command: str, n_variants: int) -> int:
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


def on_boards(fn: Callable[[Any], None], shares: list) -> None:
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
