"""Tuning throughput: tvmflow's tuner vs MetaSchedule's stock ``tune_relax`` setup.

Both tune the same variant, through the same shared pipeline (same tasks), with the same
trial budget, candidates per round and seed, each in a fresh process, one after the other in
this run.  The stock setup is ``tune_relax`` with its default LocalBuilder (pool restarted
every batch, ``tvm.s_tir.tensor_intrin`` imported in each worker), LocalRunner and gradient
task scheduler; tvmflow's is :func:`tvmflow.tuning.tune.tune` (persistent build pool, no
tensor-intrinsics import, eager scheduler).  Wall time counts from process start (imports,
task extraction included) to the end; "valid" = records whose measurement succeeded; a
stock run longer than ``--stock-cap`` seconds is stopped and counted as far as it got.

    python benchmarks/tune_throughput.py --variant pruned-a8 --trials 64
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def child(mode: str, variant: str, trials: int, per_round: int, work: Path) -> None:
    t0 = time.time()
    if mode == "tvmflow":
        from tvmflow.tuning.tune import tune
        tune(variant, "host", trials=trials, per_round=per_round, root=work, fresh=True)
    else:
        from tvmflow.adapter import pipeline
        from tvmflow.adapter import tune as ad
        from tvmflow.ir.frontend import import_model
        from tvmflow.target.presets import get_target
        preset = get_target("host")
        tgt = preset.tvm_target()
        mod = pipeline.prepare(import_model(variant).mod, tgt)
        d = work / "host" / variant
        d.mkdir(parents=True, exist_ok=True)
        ad.stock_tune_relax(mod, tgt, str(d), trials=trials, per_round=per_round, seed=0)
    print(json.dumps({"wall_s": time.time() - t0}))


def count(work: Path, variant: str, mode: str = "stock") -> dict:
    from tvmflow.tuning import schedules as S
    # tvmflow's tune writes this CPU's set (host/<cpu>/<variant>); the stock run its own dir
    d = S.schedule_dir("host", variant, work) if mode == "tvmflow" else work / "host" / variant
    recs, _ = S._read_lines(d / S.DB_RECORDS)
    valid = sum(1 for r in recs if S.run_secs(r) != float("inf"))
    timeouts = errors = sent = 0
    for log in (d / "logs").glob("*.log") if (d / "logs").is_dir() else []:
        text = log.read_text(errors="replace")
        # candidates the search handed to the builder (MetaSchedule logs each batch); the
        # stock gradient scheduler commits a batch only when its task comes round again, so
        # a capped stock run can have sent candidates that never reached the database
        sent += sum(int(n) for n in re.findall(r"Sending (\d+) candidates?\(?s?\)? for "
                                               r"measurement", text))
        timeouts += text.count("Timeout, killed after") + text.count("FastBuilder: timeout")
        errors += text.count("LocalBuilder: An exception") + text.count("FastBuilder: ")
    return {"records": len(recs), "valid": valid, "build_timeouts": timeouts,
            "build_errors": errors, "sent": sent}


def run(mode: str, args, work: Path, cap: float | None) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--variant", args.variant, "--trials",
           str(args.trials), "--per-round", str(args.per_round), "--work", str(work)]
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    capped = False
    try:
        out, _ = proc.communicate(timeout=cap)
    except subprocess.TimeoutExpired:
        capped = True
        os.killpg(proc.pid, 9)
        proc.communicate()
    wall = time.time() - t0
    res = {"mode": mode, "wall_s": round(wall, 1), "capped": capped, **count(work, args.variant, mode)}
    res["valid_per_min"] = round(60 * res["valid"] / wall, 1)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", default="pruned-a8")
    ap.add_argument("--trials", type=int, default=64)
    ap.add_argument("--per-round", type=int, default=32)
    ap.add_argument("--stock-cap", type=float, default=900.0, help="seconds")
    ap.add_argument("--only", choices=["tvmflow", "stock"], default=None)
    ap.add_argument("--child", default=None)
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.variant, args.trials, args.per_round, Path(args.work))
        return
    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="tvmflow-tput-") as tmp:
        for mode in ("tvmflow", "stock"):
            if args.only and mode != args.only:
                continue
            rows.append(run(mode, args, Path(tmp) / mode,
                            args.stock_cap if mode == "stock" else None))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{args.variant}, {args.trials} trials, {args.per_round} per round, "
          f"{os.cpu_count()} cores, load average at start {load[0]:.1f}")
    print(f"{'setup':8s} {'wall s':>8s} {'records':>8s} {'valid':>6s} {'valid/min':>10s} "
          f"{'build timeouts':>15s} {'sent':>5s} capped")
    for r in rows:
        print(f"{r['mode']:8s} {r['wall_s']:8.1f} {r['records']:8d} {r['valid']:6d} "
              f"{r['valid_per_min']:10.1f} {r['build_timeouts']:15d} {r['sent']:5d} {r['capped']}")
    print("records/valid: in the database at the end; sent: candidates the search handed to "
          "the builder")
    if len(rows) == 2 and rows[1]["valid_per_min"] > 0:
        print(f"tvmflow / stock throughput: {rows[0]['valid_per_min'] / rows[1]['valid_per_min']:.1f}x")


if __name__ == "__main__":
    main()
