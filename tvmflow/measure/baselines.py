"""Baselines timed on the same machine, same input, in the same run as TVM.

For a host target ``bench`` and ``compare`` also time the variant in PyTorch eager
(``torch.set_num_threads(N)``) and in ONNX Runtime (CPU provider, ``intra_op_num_threads =
N``), with the N threads TVM gets too (the target's ``num-cores``, or ``--threads``: see
:mod:`tvmflow.threads`), so "TVM is N x faster than the best baseline" is a measured ratio,
not a remembered one.  :meth:`Runner.measured_threads` reads back what each runtime reports.

For a CUDA target on this machine's GPU the baselines are GPU ones (:data:`GPU_BASELINES`):
PyTorch eager on the GPU and ``torch.compile(mode="reduce-overhead")`` (Inductor kernels
replayed as CUDA graphs), both timed with CUDA events around each single run, as TVM's
``time_evaluator`` times the module on the device; ONNX Runtime only where its CUDA
execution provider is installed.  A GPU baseline that cannot be set up is left out with its
reason (:func:`make_gpu_baselines`): a GPU lease is too short to lose to one of them.

Each baseline is a *runner* with the same interface as the TVM module (:class:`Runner`), so
they interleave with it in rounds.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tvmflow.errors import TvmflowError

BASELINES = ("torch", "onnxruntime")
GPU_BASELINES = ("torch-cuda", "torch-compile", "onnxruntime-cuda")
LABELS = {"tvm": "TVM", "torch": "PyTorch eager", "onnxruntime": "ONNX Runtime",
          "torch-cuda": "PyTorch eager (CUDA)",
          "torch-compile": "torch.compile reduce-overhead (CUDA)",
          "onnxruntime-cuda": "ONNX Runtime (CUDA EP)"}
SHORT = {"tvm": "TVM", "torch": "PyTorch", "onnxruntime": "ORT", "torch-cuda": "PyTorch",
         "torch-compile": "torch.compile", "onnxruntime-cuda": "ORT"}


@dataclass
class Runner:
    """Something that runs one variant on one input: ``first_run``, ``run``, ``time``."""

    kind: str          # "tvm", "torch" or "onnxruntime"
    variant: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return LABELS.get(self.kind, self.kind)

    def first_run(self) -> dict[str, float]:
        t0 = time.perf_counter()
        self.run(1)
        wall = time.perf_counter() - t0
        return {"wall_s": wall, "rpc_round_trip_s": 0.0, "latency_s": wall, "was_first_call": True}

    def run(self, n: int = 1) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def time(self, repeat: int) -> np.ndarray:
        """``repeat`` single-run latencies in seconds (host clock, one call each)."""
        out = np.empty(max(int(repeat), 1))
        for i in range(out.size):
            t0 = time.perf_counter()
            self.run(1)
            out[i] = time.perf_counter() - t0
        return out

    def measured_threads(self) -> int | None:
        """The thread count the runtime itself reports for this runner (None: unknown)."""
        return None

    def close(self) -> None:
        pass


class TorchRunner(Runner):
    def __init__(self, variant: str, model, x: np.ndarray, threads: int):
        import torch
        super().__init__("torch", variant, {"threads": threads, "version": torch.__version__})
        self._torch = torch
        self.model = model.eval()
        self.x = torch.from_numpy(np.ascontiguousarray(x))
        self.threads = threads

    def run(self, n: int = 1) -> None:
        torch = self._torch
        old = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                for _ in range(n):
                    self.model(self.x)
        finally:
            torch.set_num_threads(old)

    def time(self, repeat: int) -> np.ndarray:
        torch = self._torch
        old = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            out = np.empty(max(int(repeat), 1))
            with torch.inference_mode():
                for i in range(out.size):
                    t0 = time.perf_counter()
                    self.model(self.x)
                    out[i] = time.perf_counter() - t0
            return out
        finally:
            torch.set_num_threads(old)

    def output(self) -> np.ndarray:
        with self._torch.inference_mode():
            return self.model(self.x).numpy()

    def measured_threads(self) -> int:
        """``torch.get_num_threads()`` read while this runner's setting is in force."""
        torch = self._torch
        old = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return int(torch.get_num_threads())
        finally:
            torch.set_num_threads(old)


class OrtRunner(Runner):
    def __init__(self, variant: str, model, x: np.ndarray, threads: int, cuda: bool = False,
                 onnx_file: str | Path | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise TvmflowError("the ONNX Runtime baseline needs the onnxruntime package",
                               hint="pip install onnxruntime, or pass --no-baselines") from None
        from tvmflow.adapter.frontend import export_onnx
        import torch
        super().__init__("onnxruntime-cuda" if cuda else "onnxruntime", variant,
                         {"threads": threads, "version": ort.__version__})
        self._tmp = tempfile.TemporaryDirectory(prefix="tvmflow-ort-")
        # an ONNX variant runs its own file; a PyTorch model is exported first
        path = onnx_file if model is None else export_onnx(
            model, torch.from_numpy(np.ascontiguousarray(x)), Path(self._tmp.name) / f"{variant}.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CUDAExecutionProvider"] if cuda else ["CPUExecutionProvider"]
        self.sess = ort.InferenceSession(str(path), opts, providers=providers)
        if cuda and "CUDAExecutionProvider" not in self.sess.get_providers():
            raise TvmflowError(f"ONNX Runtime did not take its CUDA provider for {variant} "
                               f"(session providers: {self.sess.get_providers()})")
        self.info["providers"] = list(self.sess.get_providers())
        self.name = self.sess.get_inputs()[0].name
        self.feed = {self.name: np.ascontiguousarray(x)}

    def run(self, n: int = 1) -> None:
        for _ in range(n):
            self.sess.run(None, self.feed)

    def time(self, repeat: int) -> np.ndarray:
        out = np.empty(max(int(repeat), 1))
        run, feed = self.sess.run, self.feed
        for i in range(out.size):
            t0 = time.perf_counter()
            run(None, feed)
            out[i] = time.perf_counter() - t0
        return out

    def output(self) -> np.ndarray:
        return self.sess.run(None, self.feed)[0]

    def measured_threads(self) -> int:
        """The intra-op thread count of the created InferenceSession's own options."""
        return int(self.sess.get_session_options().intra_op_num_threads)

    def close(self) -> None:
        self._tmp.cleanup()


def event_times(call: Callable[[], Any], repeat: int, new_event: Callable[[], Any],
                synchronize: Callable[[], None]) -> np.ndarray:
    """``repeat`` single-run latencies (s) of ``call``, each between two device events.

    ``new_event()`` gives a timing event with ``record()`` and ``elapsed_time(other)`` in ms
    (``torch.cuda.Event(enable_timing=True)``).  The events are all read after one final
    ``synchronize()``, so the host never waits between runs: each sample is the device's time
    from the start of one run to its end, as TVM's ``time_evaluator`` (number=1) measures.
    """
    pairs = []
    for _ in range(max(int(repeat), 1)):
        start, end = new_event(), new_event()
        start.record()
        call()
        end.record()
        pairs.append((start, end))
    synchronize()
    return np.array([start.elapsed_time(end) * 1e-3 for start, end in pairs])


class TorchCudaRunner(Runner):
    """PyTorch on the GPU: eager, or ``torch.compile(mode=...)`` ("reduce-overhead": Inductor
    kernels replayed as CUDA graphs).  Timed with CUDA events (:func:`event_times`)."""

    def __init__(self, variant: str, model, x: np.ndarray, compile_mode: str | None = None):
        import torch
        if not torch.cuda.is_available():
            raise TvmflowError(f"PyTorch {torch.__version__} sees no CUDA GPU here")
        super().__init__("torch-compile" if compile_mode else "torch-cuda", variant,
                         {"version": torch.__version__, "timer": "CUDA events",
                          "device": torch.cuda.get_device_name(0), "compile_mode": compile_mode})
        self._torch = torch
        dev = torch.device("cuda", 0)
        self.model = model.eval().to(dev)
        self.x = torch.from_numpy(np.ascontiguousarray(x)).to(dev)
        self.fn = torch.compile(self.model, mode=compile_mode) if compile_mode else self.model
        self.graphs = compile_mode == "reduce-overhead"

    def _call(self):
        if self.graphs:   # a new step: the graph may reuse the last run's output buffers
            self._torch.compiler.cudagraph_mark_step_begin()
        return self.fn(self.x)

    def run(self, n: int = 1) -> None:
        with self._torch.inference_mode():
            for _ in range(n):
                self._call()
        self._torch.cuda.synchronize()

    def time(self, repeat: int) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            return event_times(self._call, repeat, lambda: torch.cuda.Event(enable_timing=True),
                               torch.cuda.synchronize)

    def output(self) -> np.ndarray:
        with self._torch.inference_mode():
            return self._call().detach().cpu().numpy()


def ort_cuda_provider() -> str | None:
    """Why ONNX Runtime cannot run on the GPU here, or None when its CUDA provider exists."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        return (f"onnxruntime {ort.__version__} has no CUDA execution provider (it has "
                f"{', '.join(providers)}; onnxruntime-gpu has it)")
    return None


def make_gpu_baselines(variant: str, model, x: np.ndarray, threads: int,
                       kinds=GPU_BASELINES) -> tuple[list[Runner], dict[str, str]]:
    """The GPU baselines that can run here, and for each left out, why."""
    import copy
    unknown = [k for k in kinds if k not in GPU_BASELINES]
    if unknown:
        raise TvmflowError(f"unknown GPU baseline {unknown[0]!r}; choose from "
                           f"{', '.join(GPU_BASELINES)}")
    runners: list[Runner] = []
    skipped: dict[str, str] = {}
    for kind in kinds:
        try:
            if kind == "torch-cuda":
                runners.append(TorchCudaRunner(variant, copy.deepcopy(model), x))
            elif kind == "torch-compile":
                runners.append(TorchCudaRunner(variant, copy.deepcopy(model), x,
                                               compile_mode="reduce-overhead"))
            else:                                   # onnxruntime-cuda
                why = ort_cuda_provider()
                if why:
                    skipped[kind] = why
                    continue
                runners.append(OrtRunner(variant, model, x, threads, cuda=True))
        except TvmflowError as exc:
            skipped[kind] = exc.message
        except Exception as exc:  # noqa: BLE001 - torch.compile & co. fail in many ways
            lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
            skipped[kind] = f"{type(exc).__name__}: {lines[-1] if lines else ''}"
    return runners, skipped


def make_baselines(variant: str, model, x: np.ndarray, threads: int,
                   kinds=BASELINES, onnx_file: str | Path | None = None,
                   skipped: dict[str, str] | None = None) -> list[Runner]:
    """Runners for the requested baselines (PyTorch eager, ONNX Runtime) of one variant; an
    ONNX variant (``model`` None, ``onnx_file`` its file) has no PyTorch baseline: its reason
    goes into ``skipped``."""
    runners: list[Runner] = []
    for kind in kinds:
        if kind == "torch" and model is None:
            if skipped is not None:
                skipped.setdefault(kind, "an ONNX model has no PyTorch module")
        elif kind == "torch":
            runners.append(TorchRunner(variant, model, x, threads))
        elif kind == "onnxruntime":
            runners.append(OrtRunner(variant, model, x, threads, onnx_file=onnx_file))
        else:
            raise TvmflowError(f"unknown baseline {kind!r}; choose from {', '.join(BASELINES)}")
    return runners
