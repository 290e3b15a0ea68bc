"""Baselines timed on the same machine, same input, in the same run as TVM.

For a host target ``bench`` and ``compare`` also time the variant in PyTorch eager
(``torch.set_num_threads(N)``) and in ONNX Runtime (CPU provider, ``intra_op_num_threads =
N``), with the N threads TVM gets too (the target's ``num-cores``, or ``--threads``: see
:mod:`tvmflow.threads`), so "TVM is N x faster than the best baseline" is a measured ratio,
not a remembered one.  :meth:`Runner.measured_threads` reads back what each runtime reports.  Each baseline is a *runner* with the same interface as
the TVM module (:class:`Runner`), so they interleave with it in rounds.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import TvmflowError

BASELINES = ("torch", "onnxruntime")
LABELS = {"tvm": "TVM", "torch": "PyTorch eager", "onnxruntime": "ONNX Runtime"}


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
    def __init__(self, variant: str, model, x: np.ndarray, threads: int):
        try:
            import onnxruntime as ort
        except ImportError:
            raise TvmflowError("the ONNX Runtime baseline needs the onnxruntime package",
                               hint="pip install onnxruntime, or pass --no-baselines") from None
        from .adapter.frontend import export_onnx
        import torch
        super().__init__("onnxruntime", variant, {"threads": threads, "version": ort.__version__})
        self._tmp = tempfile.TemporaryDirectory(prefix="tvmflow-ort-")
        path = export_onnx(model, torch.from_numpy(np.ascontiguousarray(x)),
                           Path(self._tmp.name) / f"{variant}.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
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


def make_baselines(variant: str, model, x: np.ndarray, threads: int,
                   kinds=BASELINES) -> list[Runner]:
    """Runners for the requested baselines (PyTorch eager, ONNX Runtime) of one variant."""
    runners: list[Runner] = []
    for kind in kinds:
        if kind == "torch":
            runners.append(TorchRunner(variant, model, x, threads))
        elif kind == "onnxruntime":
            runners.append(OrtRunner(variant, model, x, threads))
        else:
            raise TvmflowError(f"unknown baseline {kind!r}; choose from {', '.join(BASELINES)}")
    return runners
