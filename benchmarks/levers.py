"""Tuned TVM vs PyTorch eager vs ONNX Runtime, and the pipeline levers, timed side by side.

``compare``: for each variant, compile with its log in ``schedules/host/<cpu>/<variant>/``
(this CPU's set, else the nearest CPU's: ``schedules.load_for_compile``; shared pipeline), then time TVM (``time_evaluator``, number=1), PyTorch eager
(``torch.set_num_threads(2)``) and ONNX Runtime (2 intra-op threads) interleaved in rounds
in THIS fresh process (a module timed in the process that tuned it runs slower); medians.

``levers``: tune one variant once per lever -- pipeline options (weight prepack, BN folding,
layout) and candidates per round -- with the same budget and seed, each into a root of its
own; then time all the tuned modules, the repo's shipped log (the trial-budget lever) and
PyTorch eager / ONNX Runtime side by side, interleaved, in one fresh process.

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
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# seconds of idle after each runner's turn: TVM's pool workers and ORT's intra-op threads spin
# after a run (TVM: up to TVM_THREAD_POOL_SPIN_COUNT yields), and a runner timed while another
# one's threads still spin on the 2 cores is slowed down by them
SETTLE = 0.1

# Each lever: pipeline options, and optionally "seed", "per_round", "trials_x" (budget
# multiple), "adapt" (tune --adapt from the nearest other CPU's set, its pipeline) and
# "time_threads" (time the module of another lever, named by "same_as", at that many TVM
# threads instead of --threads: the thread lever without a second search; "same_as": "repo"
# is the repo's shipped set for this CPU) and "other_cpu" (no tuning: the repo's sets of the
# other CPUs only, so compile takes the nearest of them, as on a CPU with no set of its own).
LEVERS = {
    "NCHW, BN folded, prepack (the default)": dict(layout="NCHW"),
    "NCHW, seed 1": dict(layout="NCHW", seed=1),
    "NCHWc, channels padded": dict(layout="NCHWc"),
    "NCHWc, channels padded, seed 1": dict(layout="NCHWc", seed=1),
    "NCHWc, channels not padded": dict(layout="NCHWc", pad_channels=False),
    "NCHWc, fixed conv rule (convs untuned)": dict(layout="NCHWc", conv_rule="fixed"),
    "NCHWc, fixed conv rule, seed 1": dict(layout="NCHWc", conv_rule="fixed", seed=1),
    "NCHWc, twice the trials": dict(layout="NCHWc", trials_x=2),
    "default, timed at 1 TVM thread": dict(same_as="NCHW, BN folded, prepack (the default)",
                                         time_threads=1),
    "shipped set for this CPU, timed at 1 TVM thread": dict(same_as="repo", time_threads=1),
    "nearest other CPU's shipped set, applied here": dict(other_cpu=True),
    "tune --adapt from the nearest CPU's set": dict(adapt=True),
    "baseline (NCHW, no prepack, BN unfolded)": dict(prepack=False, fold_bn=False, layout="NCHW"),
    "NHWC + BN folded + prepack": dict(prepack=True, fold_bn=True, layout="NHWC"),
    "NCHWc, 16 candidates per round": dict(layout="NCHWc", per_round=16),
}


def _tuned_module(session, model, preset, root: Path | None, x):
    """Compile ``model`` with its log under ``root`` (None: the repo's) through the shared
    pipeline and load it in ``session`` with ``x`` set; returns ``(loaded module, meta,
    coverage, max abs error vs PyTorch)``."""
    from tvmflow.tuning import schedules as S
    from tvmflow.adapter import pipeline
    db, meta = S.load_for_compile(preset, model.name, root=root)
    # the log's pipeline; with no log, what compile takes for this model
    opts = (pipeline.PipelineOptions.from_json(meta["pipeline"]) if meta.get("pipeline")
            else pipeline.default_options(preset.tvm_target(), model.mod))
    ex, cov = pipeline.build(model.mod, preset, db, options=opts)
    loaded = session.load(ex)
    out = loaded.infer(x)
    return loaded, meta, cov, float(np.abs(out - model.reference(x)).max())


def time_variant(variant: str, root: Path | None, rounds: int, repeat: int, threads: int) -> dict:
    from tvmflow.adapter.pipeline import PipelineOptions
    from tvmflow.adapter.runtime import local_session
    from tvmflow.measure.baselines import make_baselines
    from tvmflow.ir.frontend import import_model
    from tvmflow.target.presets import get_target
    preset = get_target("host")
    model = import_model(variant)
    x = model.example_input()
    loaded, info, cov, err = _tuned_module(local_session(), model, preset, root, x)
    others = make_baselines(variant, model.torch_model, x, threads)
    for r in others:
        r.run(10)
    samples: dict[str, list] = {"tvm": []}
    samples.update({r.kind: [] for r in others})
    for _ in range(rounds):
        samples["tvm"] += list(loaded.time(repeat))
        for r in others:
            samples[r.kind] += list(r.time(repeat))
    for r in others:
        r.close()
    res = {k: float(np.median(v)) * 1e3 for k, v in samples.items()}
    return {"variant": variant, "trials": info.get("trials"), "tasks": cov["tasks"],
            "tuned_tasks": cov["tuned"], "max_abs_err": err,
            "pipeline": PipelineOptions.from_json(info.get("pipeline")).to_json(),
            "median_ms": res, "load": os.getloadavg()[0]}


def cmd_compare(args) -> None:
    import torch
    torch.set_num_threads(args.threads)
    from tvmflow.spec.registry import resolve_variants
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


def time_many(variant: str, roots: list[Path | None], rounds: int, repeat: int,
              threads: int, root_threads: list[int] | None = None) -> dict:
    """Build ``variant`` from each schedules root (None: the repo's) and time all the modules
    and PyTorch eager / ONNX Runtime interleaved, round by round, in this one process.

    ``root_threads``: TVM's thread count for each module (default ``threads``); the pool is
    set before each module's turn (``runtime.config_threadpool``).
    """
    from tvmflow.adapter.runtime import local_session
    from tvmflow.measure.baselines import make_baselines
    from tvmflow.ir.frontend import import_model
    from tvmflow.target.presets import get_target
    preset = get_target("host")
    model = import_model(variant)
    x = model.example_input()
    session = local_session()
    root_threads = root_threads or [threads] * len(roots)
    timers, info = [], []
    for root, n in zip(roots, root_threads):
        session.use_threads(n)
        loaded, meta, cov, err = _tuned_module(session, model, preset, root, x)
        timers.append(loaded)
        info.append({"root": str(root) if root else "repo", "trials": meta.get("trials"),
                     "tuned_tasks": cov["tuned"], "tasks": cov["tasks"], "max_abs_err": err,
                     "tvm_threads": n, "cpu_set": meta.get("cpu"),
                     "pipeline": meta.get("pipeline")})
    session.use_threads(threads)
    others = make_baselines(variant, model.torch_model, x, threads)
    for r in others:
        r.run(10)
    samples = [[] for _ in timers]
    base = {r.kind: [] for r in others}
    for k in range(rounds):
        order = range(len(timers)) if k % 2 == 0 else reversed(range(len(timers)))
        for i in order:
            session.use_threads(root_threads[i])
            samples[i] += list(timers[i].time(repeat))
            time.sleep(SETTLE)
        session.use_threads(threads)
        for r in others:
            base[r.kind] += list(r.time(repeat))
            time.sleep(SETTLE)
    for r in others:
        r.close()
    for d, s in zip(info, samples):
        arr = np.array(s) * 1e3
        d["tvm_ms"] = float(np.median(arr))
        d["tvm_cv"] = float(arr.std() / arr.mean())
    return {"variant": variant, "modules": info,
            "baselines_ms": {k: float(np.median(v)) * 1e3 for k, v in base.items()},
            "load": os.getloadavg()[0]}


def _copy_other_cpu_sets(root: Path, args) -> None:
    """The repo's (or --adapt-root's) host sets of the variant for every CPU but this one,
    copied under ``root``."""
    import shutil
    from tvmflow.tuning import schedules as S
    from tvmflow.target.presets import get_target
    src = Path(args.adapt_root) if args.adapt_root else S.schedules_root()
    here = get_target("host").cpu_key
    for d in (src / "host").glob(f"*/{args.variant}"):
        if d.parent.name == here:
            continue
        dest = root / "host" / d.parent.name / args.variant
        if not dest.exists():
            shutil.copytree(d, dest, ignore=shutil.ignore_patterns("logs"))


def _tune_levers(args, keep: Path) -> list[dict]:
    """Tune the variant once per selected lever into ``keep/l<i>``; one row per lever."""
    from tvmflow.adapter.pipeline import PipelineOptions
    from tvmflow.tuning.tune import tune
    rows: list[dict] = []
    roots: dict[str, Path] = {}
    for i, (label, opts) in enumerate(LEVERS.items()):
        if (args.only or args.lever) and not (
                any(o in label for o in args.only or ()) or label in (args.lever or ())):
            continue
        opts = dict(opts)
        if opts.get("other_cpu"):
            root = keep / f"l{i}"
            _copy_other_cpu_sets(root, args)
            rows.append({"lever": label, "root": root, "trials": None, "est_ms": None,
                         "tune_s": 0.0})
            continue
        if "same_as" in opts:
            if opts["same_as"] == "repo":
                roots["repo"] = "repo"
            if opts["same_as"] not in roots:
                continue
            rows.append({"lever": label, "root": roots[opts["same_as"]], "trials": None,
                         "est_ms": None, "tune_s": 0.0, "time_threads": opts["time_threads"]})
            continue
        per_round = opts.pop("per_round", args.per_round)
        seed = opts.pop("seed", 0)
        trials = args.trials * opts.pop("trials_x", 1)
        adapt = opts.pop("adapt", None)
        root = keep / f"l{i}"
        if adapt:  # the other CPUs' sets of the repo, beside this lever's empty one
            _copy_other_cpu_sets(root, args)
        res = tune(args.variant, "host", trials=trials, per_round=per_round, seed=seed,
                   root=root, options=None if adapt else PipelineOptions(**opts),
                   fresh=not args.keep, adapt=adapt, threads=args.threads)
        roots[label] = root
        rows.append({"lever": label, "root": root, "trials": res.trials_total,
                     "est_ms": res.est_total_ms, "tune_s": res.wall_s, "seed": seed})
        print(json.dumps({k: str(v) if k == "root" else v for k, v in rows[-1].items()}),
              flush=True)
    return rows


def _time_levers(args, rows: list[dict]) -> dict:
    """Time every lever's module and the repo's shipped log in one fresh process."""
    cmd = [sys.executable, __file__, "_timeall", "--variant", args.variant, "--rounds",
           str(args.rounds), "--repeat", str(args.repeat), "--threads", str(args.threads),
           "--root", ",".join([str(r["root"]) for r in rows] + ["repo"]),
           "--root-threads", ",".join([str(r.get("time_threads") or args.threads)
                                       for r in rows] + [str(args.threads)])]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"timing failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cmd_levers(args) -> None:
    """Tune the variant once per lever into a root of its own (same budget and seed unless
    the lever changes them), then time every tuned module -- and the repo's shipped log for
    this CPU -- side by side in one fresh process (a module timed in the process that tuned
    it runs slower)."""
    unknown = sorted(set(args.lever or ()) - set(LEVERS))
    if unknown:
        sys.exit(f"unknown lever {unknown[0]!r}; the levers: {', '.join(LEVERS)}")
    with tempfile.TemporaryDirectory(prefix="tvmflow-levers-") as tmp:
        rows = _tune_levers(args, Path(args.keep) if args.keep else Path(tmp))
        t = _time_levers(args, rows)
    mods = t["modules"]
    shipped = mods[-1]
    rows.append({"lever": f"shipped log for this CPU ({shipped['trials']} trials)",
                 "trials": shipped["trials"], "est_ms": None})
    print(f"\n{args.variant} on the host, {args.trials} trials per lever, {args.threads} "
          f"threads, timed side by side (medians, {args.rounds} rounds x {args.repeat} runs)")
    for r, m in zip(rows, mods):
        est = "" if r["est_ms"] is None else f" (tuner estimate {r['est_ms']:.3f} ms)"
        print(f"{r['lever']:48s} {m['tvm_ms']:8.3f} ms  cv {m['tvm_cv']:.2f}  "
              f"{m['tuned_tasks']}/{m['tasks']} tasks tuned, set {m['cpu_set']}, "
              f"{m['tvm_threads']} thr{est}")
    for k, v in t["baselines_ms"].items():
        print(f"{k:48s} {v:8.3f} ms")
    print(f"(load average {t['load']:.1f} at the end)")
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(
            {"variant": args.variant, "trials": args.trials, "threads": args.threads,
             "rows": [{k: str(v) if k == "root" else v for k, v in r.items()} for r in rows],
             "timing": t}, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["compare", "levers", "_timeall"])
    ap.add_argument("--variant", default="all")
    ap.add_argument("--root", default=None, help="schedules root (default: the repo's)")
    ap.add_argument("--trials", type=int, default=256)
    ap.add_argument("--per-round", type=int, default=32,
                    help="candidates per round, for the levers that do not set their own")
    ap.add_argument("--only", action="append", default=None,
                    help="levers mode: run only the levers whose label contains this (repeatable)")
    ap.add_argument("--lever", action="append", default=None,
                    help="levers mode: also run the lever with exactly this label (repeatable)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2,
                    help="threads of TVM (here and in the tuner's runner), PyTorch and ORT")
    ap.add_argument("--keep", default=None,
                    help="levers mode: tune into DIR/l<i> and keep (resume) those logs")
    ap.add_argument("--json-out", default=None, help="levers mode: also write the figures here")
    ap.add_argument("--adapt-root", default=None,
                    help="levers mode: schedules root the --adapt lever takes records from "
                         "(default: the repo's)")
    ap.add_argument("--root-threads", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    # TVM's pool reads TVM_NUM_THREADS when it starts: set before any TVM code runs here
    # (children inherit it; tvmflow.tune resolves its runner's count from it)
    from tvmflow.threads import export, settings
    export(settings(args.threads))
    if args.mode == "compare":
        cmd_compare(args)
    elif args.mode == "levers":
        cmd_levers(args)
    elif args.mode == "_timeall":
        roots = [None if r == "repo" else Path(r) for r in args.root.split(",")]
        per = [int(n) for n in args.root_threads.split(",")] if args.root_threads else None
        print(json.dumps(time_many(args.variant, roots, args.rounds, args.repeat, args.threads,
                                   per)))


if __name__ == "__main__":
    main()
