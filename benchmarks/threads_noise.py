"""Why is multi-thread TVM noisier than ONNX Runtime? TVM's thread-pool knobs, side by side.

Compiles one variant for the host (its tuned schedules, the shipped pipeline), then times it in
fresh child processes, one per setting and round, the settings interleaved round by round:

* TVM as tvmflow runs it (N threads, workers pinned to cores: TVM's default affinity);
* ``TVM_BIND_THREADS=0`` (no pinning: the OS may move a thread off a core a neighbour took);
* ``TVM_THREAD_POOL_SPIN_COUNT=0`` (idle workers sleep at once instead of spinning);
* both; TVM on 1 thread; ONNX Runtime with N intra-op threads (for its CV).

Each child warms up, then times single runs; the parent prints p50, p90, p99 and CV per
setting over all rounds.  Nothing else should run meanwhile.

    python benchmarks/threads_noise.py --variant pruned-a8 --rounds 6 --runs 300
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SETTINGS = {
    "TVM, default affinity (pinned)": {},
    "TVM, TVM_BIND_THREADS=0": {"TVM_BIND_THREADS": "0"},
    "TVM, TVM_THREAD_POOL_SPIN_COUNT=0": {"TVM_THREAD_POOL_SPIN_COUNT": "0"},
    "TVM, both": {"TVM_BIND_THREADS": "0", "TVM_THREAD_POOL_SPIN_COUNT": "0"},
    "TVM, 1 thread": {"threads": "1"},
    "ONNX Runtime": {"ort": "1"},
}


def child(args) -> None:
    """Time ``args.module`` (or ORT on ``args.onnx``) and print the samples in seconds."""
    import time
    x = np.load(args.input)
    samples = []
    if args.onnx:
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(args.onnx, opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        for _ in range(args.warmup):
            sess.run(None, {name: x})
        for _ in range(args.runs):
            t = time.perf_counter()
            sess.run(None, {name: x})
            samples.append(time.perf_counter() - t)
        threads = sess.get_session_options().intra_op_num_threads
    else:
        from tvmflow.adapter.runtime import local_session
        session = local_session("cpu")
        loaded = session.load(args.module)
        loaded.set_input(x)
        loaded.run(args.warmup)
        samples = [float(s) for s in loaded.time(args.runs)]
        threads = session.num_threads()
    print(json.dumps({"samples": samples, "threads": threads}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", default="pruned-a8")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None, help="default: the host's cores")
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--module", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--onnx", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--input", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        child(args)
        return
    from tvmflow.target.presets import get_target
    from tvmflow.threads import resolve
    preset = get_target("host")
    samples, seen = _time_settings(args, resolve(preset, args.threads))
    _print_rows(args, preset.cpu_key, samples, seen)


def _time_settings(args, n: int) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Compile the variant, then time it under every setting, each round in fresh child
    processes, the settings interleaved; the samples and thread counts per setting."""
    from tvmflow.artifact.compile import compile as compile_variant
    from tvmflow.adapter.frontend import export_onnx
    from tvmflow.ir.frontend import import_model
    from tvmflow.threads import child_env
    with tempfile.TemporaryDirectory(prefix="tvmflow-noise-") as tmp:
        tmp = Path(tmp)
        pkg = compile_variant(args.variant, "host", output=tmp / "model.so")
        model = import_model(args.variant)
        x = model.example_input()
        np.save(tmp / "x.npy", x)
        import torch
        onnx_path = export_onnx(model.torch_model, torch.from_numpy(x), tmp / "model.onnx")
        samples: dict[str, list[float]] = {k: [] for k in SETTINGS}
        seen: dict[str, int] = {}
        for rnd in range(args.rounds):
            order = list(SETTINGS) if rnd % 2 == 0 else list(reversed(SETTINGS))
            for label in order:
                extra = dict(SETTINGS[label])
                threads = int(extra.pop("threads", n))
                ort = extra.pop("ort", None)
                cmd = [sys.executable, __file__, "--_child", "--input", str(tmp / "x.npy"),
                       "--runs", str(args.runs), "--warmup", str(args.warmup),
                       "--threads", str(threads)]
                cmd += ["--onnx", str(onnx_path)] if ort else ["--module", str(pkg.path)]
                env = child_env(threads, extra=extra)
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
                out = json.loads(proc.stdout.strip().splitlines()[-1])
                samples[label] += out["samples"]
                seen[label] = out["threads"]
    return samples, seen


def _print_rows(args, cpu: str, samples: dict[str, list[float]], seen: dict[str, int]) -> None:
    print(f"{args.variant} on {cpu}, {args.rounds} rounds x {args.runs} single runs per setting, "
          f"each in a fresh process, interleaved (load average {os.getloadavg()[0]:.1f} at the end)")
    print(f"{'setting':36s} {'threads':>7s} {'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s} {'CV %':>6s}")
    rows = []
    for label, s in samples.items():
        a = np.array(s) * 1e3
        row = {"setting": label, "threads": seen.get(label), "p50_ms": float(np.median(a)),
               "p90_ms": float(np.percentile(a, 90)), "p99_ms": float(np.percentile(a, 99)),
               "cv": float(a.std() / a.mean())}
        rows.append(row)
        print(f"{label:36s} {row['threads']:>7} {row['p50_ms']:8.3f} {row['p90_ms']:8.3f} "
              f"{row['p99_ms']:8.3f} {row['cv'] * 100:6.1f}")
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps({"variant": args.variant, "cpu": cpu,
                                                   "rounds": args.rounds, "runs": args.runs,
                                                   "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
