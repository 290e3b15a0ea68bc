"""Your own model through the whole flow: torchvision's resnet18 and mobilenet_v2 at their
real input (1x3x224x224), each pruned at 0.5 by Torch-Pruning with align 1 and 8, all tuned
alike, compared on the host beside PyTorch eager and ONNX Runtime.

    .venv/bin/python benchmarks/own_models.py --trials 256       # the CLI steps, then RESULTS.md
    .venv/bin/python benchmarks/own_models.py --render-only      # re-render from the reports

Per model it runs the commands the README shows, in a workspace of its own (``--workspace``,
default ``~/.cache/tvmflow/own-models``: the variant files, the pruned .pt2 programs, the
tuning logs and the modules)::

    tvmflow import torchvision:resnet18 --name resnet18
    tvmflow prune -v resnet18 --ratio 0.5               # resnet18-p50
    tvmflow prune -v resnet18 --ratio 0.5 --align 8     # resnet18-p50-a8
    tvmflow tune --target host -v resnet18 --trials T   # ... and the two pruned ones, alike
    tvmflow compare --target host -v resnet18,resnet18-p50,resnet18-p50-a8 \\
        --pair resnet18-p50-a8,resnet18-p50 -o benchmarks/results/own-models-host/resnet18

and writes the section between the ``OWN`` markers of RESULTS.md from the reports.  Steps
already done (a variant that exists, a log with the trials) are skipped by tvmflow itself.
Run it on an otherwise idle machine: the 2 cores are shared by everything.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "own-models-host"
RESULTS = ROOT / "RESULTS.md"
MODELS = ("resnet18", "mobilenet_v2")
OWN_BEGIN, OWN_END = "<!-- OWN:BEGIN -->", "<!-- OWN:END -->"


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _tvmflow(env: dict[str, str], *args: str) -> None:
    _say("tvmflow " + " ".join(args))
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "tvmflow", *args], env=env, check=True)
    _say(f"  done in {time.monotonic() - t0:.0f} s")


def variants(model: str) -> list[str]:
    return [model, f"{model}-p50", f"{model}-p50-a8"]


def measure(model: str, args, env: dict[str, str]) -> None:
    models_dir = Path(env["TVMFLOW_HOME"]) / "models"
    base, p50, p50a8 = variants(model)
    if not (models_dir / f"{base}.toml").exists():
        _tvmflow(env, "import", f"torchvision:{model}", "--name", base)
    for name, align in ((p50, []), (p50a8, ["--align", "8"])):
        if not (models_dir / f"{name}.toml").exists():
            _tvmflow(env, "prune", "-v", base, "--ratio", "0.5", *align)
    for name in (base, p50, p50a8):
        _tvmflow(env, "tune", "--target", "host", "-v", name, "--trials", str(args.trials),
                 "--per-round", str(args.per_round))
    _tvmflow(env, "compare", "--target", "host", "-v", ",".join(variants(model)),
             "--pair", f"{p50a8},{p50}", "--rounds", str(args.rounds), "-o", str(OUT / model),
             "--force")


# ------------------------------------------------------------------------------ rendering


def _load(model: str):
    sys.path.insert(0, str(ROOT))
    from tvmflow.measure.report import BenchReport
    return BenchReport.from_json((OUT / model / "report.json").read_text())


def _row(r, base) -> list[str]:
    def ms(runner: str) -> str:
        p50 = r.p50(runner)
        return f"{p50 * 1e3:.2f}" if p50 else "n/a"
    lo, hi = r.latency["tvm"].median_ci(0.95)
    best = r.best_baseline()
    return [f"`{r.variant}`", f"{r.macs / 1e6:.0f}", f"{r.params / 1e6:.2f}", ms("tvm"),
            f"{lo * 1e3:.2f} – {hi * 1e3:.2f}", ms("torch"), ms("onnxruntime"),
            f"{base.p50() / r.p50():.2f}x",
            f"{r.p50(best) / r.p50():.2f}x" if best else "n/a",
            f"{r.trials} trials, {r.coverage} tasks" if r.trials else "untuned"]


def _same(rep) -> str:
    """A note when the pair's two variants have the same MACs and params."""
    a, b = (rep.result(n) for n in rep.pair)
    if a is None or b is None or (a.macs, a.params) != (b.macs, b.params):
        return ""
    return (f"`{a.variant}` and `{b.variant}` have the same MACs and params: pruning at 0.5 "
            "left every channel count a multiple of 8 already, so `round_to=8` changed "
            "nothing, and the pair lines are an A/A check: two tunes of one network.\n")


def _caveat(rep) -> str:
    """What the tuning budget left untuned, from each variant's coverage ("tuned/tasks")."""
    untuned = []
    for r in rep.results:
        done, tasks = (int(x) for x in (r.coverage or "0/0").split("/"))
        if done < tasks:
            untuned.append(f"`{r.variant}` {tasks - done} of {tasks}")
    if not untuned:
        return "Every task of every variant has tuning records."
    return ("Caveat: within the budget some tasks got no record and run TVM's default "
            f"schedules ({', '.join(untuned)} tasks). Such kernels are slow, so TVM's absolute "
            "latencies here show how far this budget is from the baselines, not how fast a "
            "fully tuned module would be. The pair lines compare two variants tuned with the "
            "same budget.")


def _section(model: str) -> str:
    rep = _load(model)
    base = rep.results[0]
    cols = ["variant", "MMACs", "M params", "TVM p50 ms", "TVM 95 % CI ms", "PyTorch p50 ms",
            "ORT p50 ms", "speed-up vs unpruned (TVM)", "TVM vs best baseline", "schedules"]
    lines = ["| " + " | ".join(cols) + " |",
             "|" + "|".join("---" if i in (0, 9) else "---:" for i in range(len(cols))) + "|"]
    lines += ["| " + " | ".join(_row(r, base)) + " |" for r in rep.results]
    sentences = [rep.alignment_sentence(k) for k in ("tvm", "torch", "onnxruntime")]
    return "\n".join([f"### {model}", "", "\n".join(lines), ""]
                     + [f"- {x}" for x in sentences if x] + ["", _same(rep), _caveat(rep)]
                     + ["", f"Data: `{(OUT / model / 'report.json').relative_to(ROOT)}` (raw "
                        "samples, environment).", ""])


def render() -> str:
    reports = [m for m in MODELS if (OUT / m / "report.json").exists()]
    if not reports:
        return "*Not measured yet* (`.venv/bin/python benchmarks/own_models.py --trials 256`)."
    rep = _load(reports[0])
    env = rep.environment
    detected = env.get("target_detected") or {}
    head = (f"Measured by `benchmarks/own_models.py` on **{env.get('host_cores')}-core "
            f"{env.get('cpu')} ({detected.get('llvm_cpu', '?')})**, {rep.created[:10]}, TVM "
            f"target `{json.dumps(env.get('target_dict'))}`. Threads (measured in the process "
            f"that ran each): {json.dumps(env.get('threads'))}. Input 1x3x224x224, 1000 classes, "
            "seeded random weights (latency does not depend on them). Pruned by Torch-Pruning "
            "at 0.5 (L2 magnitude, the classifier kept); `-a8` with `round_to=8`. Every "
            "variant tuned with the same budget (last column). p50 of single runs; variants "
            "and runners measured in interleaved rounds; the ratios' 95 % CIs are bootstraps "
            "of the medians.")
    return "\n".join([head, ""] + [_section(m) for m in reports])


def write_results(section: str) -> None:
    text = RESULTS.read_text()
    block = f"{OWN_BEGIN}\n{section.rstrip()}\n{OWN_END}"
    if OWN_BEGIN in text:
        text = re.sub(re.escape(OWN_BEGIN) + r".*?" + re.escape(OWN_END), lambda _m: block,
                      text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n## Your own model: resnet18 and mobilenet_v2, pruned\n\n" \
            + block + "\n"
    RESULTS.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=256, help="tuning trials per variant")
    ap.add_argument("--per-round", type=int, default=32, help="tuning candidates per round")
    ap.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--workspace", default=str(Path.home() / ".cache" / "tvmflow" / "own-models"))
    ap.add_argument("--render-only", action="store_true", help="only rewrite RESULTS.md")
    args = ap.parse_args()
    if not args.render_only:
        env = dict(os.environ, TVMFLOW_HOME=str(Path(args.workspace).resolve()))
        Path(env["TVMFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            measure(model, args, env)
    write_results(render())
    _say(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
