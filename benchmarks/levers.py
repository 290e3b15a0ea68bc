"""Tuned TVM vs PyTorch eager vs ONNX Runtime, and the pipeline levers, timed side by side.

``compare``: for each variant, compile with its log in ``schedules/host/<variant>/`` (shared
pipeline), then time TVM (``time_evaluator``, number=1), PyTorch eager
(``torch.set_num_threads(2)``) and ONNX Runtime (2 intra-op threads) interleaved in rounds
in THIS fresh process (a module timed in the process that tuned it runs slower); medians.

``levers``: tune one variant with each pipeline option set (prepack, BN folding, layout) and
the same budget into a temporary root, then time each tuned module in a fresh process.

    python benchmarks/levers.py compare --variant all
    python benchmarks/levers.py levers --variant original --trials 256
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

LEVERS = {
    "baseline (NCHW, no prepack, BN unfolded)": dict(prepack=False, fold_bn=False, layout="NCHW"),
    "+ BN folded": dict(prepack=False, fold_bn=True, layout="NCHW"),
    "+ BN folded + prepack (default)": dict(prepack=True, fold_bn=True, layout="NCHW"),
    "NHWC + BN folded + prepack": dict(prepack=True, fold_bn=True, layout="NHWC"),
}


def time_variant(variant: str, root: Path | None, rounds: int, repeat: int, threads: int,
                 baselines: bool = True) -> dict:
    import tvm
    from tvm import relax
    from tvmflow import schedules as S
    from tvmflow.adapter import pipeline
    from tvmflow.baselines import make_baselines
    from tvmflow.frontend import import_model
    from tvmflow.targets import get_target
    preset = get_target("host")
    model = import_model(variant)
    db, info = S.load_for_compile(preset, variant, root=root)
    opts = pipeline.PipelineOptions.from_json(info.get("pipeline"))
    ex, cov = pipeline.build(model.mod, preset, db, options=opts)
    x = model.example_input()
    dev = tvm.cpu()
    vm = relax.VirtualMachine(ex, dev)
    vm.set_input("main", tvm.runtime.tensor(x, dev))
    vm.invoke_stateful("main")
    out = vm.get_outputs("main")
    while isinstance(out, (tuple, list)) or not hasattr(out, "numpy"):
        out = out[0]
    err = float(np.abs(out.numpy() - model.reference(x)).max())
    timer = vm.time_evaluator("invoke_stateful", dev, number=1, repeat=repeat)
    others = make_baselines(variant, model.torch_model, x, threads) if baselines else []
    for r in others:
        r.run(10)
    samples: dict[str, list] = {"tvm": []}
    samples.update({r.kind: [] for r in others})
    for _ in range(rounds):
        samples["tvm"] += list(timer("main").results)
        for r in others:
            samples[r.kind] += list(r.time(repeat))
    for r in others:
        r.close()
    res = {k: float(np.median(v)) * 1e3 for k, v in samples.items()}
    return {"variant": variant, "trials": info.get("trials"), "tasks": cov["tasks"],
            "tuned_tasks": cov["tuned"], "max_abs_err": err, "pipeline": opts.to_json(),
            "median_ms": res, "load": os.getloadavg()[0]}


def cmd_compare(args) -> None:
    import torch
    torch.set_num_threads(args.threads)
    from tvmflow.registry import resolve_variants
    rows = []
    for v in resolve_variants(args.variant):
        r = time_variant(v, Path(args.root) if args.root else None, args.rounds, args.repeat,
                         args.threads)
        rows.append(r)
        print(json.dumps(r), flush=True)
    print(f"\n{'variant':14s} {'trials':>6s} {'tuned':>7s} {'TVM ms':>8s} {'torch ms':>9s} "
          f"{'ORT ms':>8s} {'vs torch':>9s} {'vs ORT':>7s}")
    for r in rows:
        m = r["median_ms"]
        print(f"{r['variant']:14s} {r['trials'] or 0:6d} {r['tuned_tasks']:3d}/{r['tasks']:<3d} "
              f"{m['tvm']:8.3f} {m['torch']:9.3f} {m['onnxruntime']:8.3f} "
              f"{m['torch'] / m['tvm']:8.2f}x {m['onnxruntime'] / m['tvm']:6.2f}x")
    print(f"(medians; time_evaluator number=1, {args.rounds} rounds x {args.repeat}; "
          f"{args.threads} threads; load average {os.getloadavg()[0]:.1f} at the end)")


def cmd_levers(args) -> None:
    from tvmflow.adapter.pipeline import PipelineOptions
    from tvmflow.tune import tune
    out = []
    with tempfile.TemporaryDirectory(prefix="tvmflow-levers-") as tmp:
        for i, (label, opts) in enumerate(LEVERS.items()):
            root = Path(tmp) / f"l{i}"
            res = tune(args.variant, "host", trials=args.trials, per_round=args.per_round,
                       root=root, options=PipelineOptions(**opts), fresh=True)
            # time in a fresh process
            cmd = [sys.executable, __file__, "_time", "--variant", args.variant, "--root",
                   str(root), "--rounds", str(args.rounds), "--repeat", str(args.repeat)]
            t = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True)
                           .stdout.strip().splitlines()[-1])
            out.append((label, res.trials_total, res.est_total_ms, t["median_ms"]["tvm"]))
            print(json.dumps({"lever": label, "trials": res.trials_total,
                              "est_ms": res.est_total_ms, "tvm_ms": t["median_ms"]["tvm"]}),
                  flush=True)
    print(f"\n{args.variant}, {args.trials} trials each")
    for label, n, est, ms in out:
        print(f"{label:45s} {ms:8.3f} ms (tuner estimate {est:.3f} ms)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["compare", "levers", "_time"])
    ap.add_argument("--variant", default="all")
    ap.add_argument("--root", default=None, help="schedules root (default: the repo's)")
    ap.add_argument("--trials", type=int, default=256)
    ap.add_argument("--per-round", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.mode == "compare":
        cmd_compare(args)
    elif args.mode == "levers":
        cmd_levers(args)
    else:
        print(json.dumps(time_variant(args.variant, Path(args.root), args.rounds, args.repeat,
                                      args.threads, baselines=False)))


if __name__ == "__main__":
    main()
