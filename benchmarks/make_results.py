"""Regenerate RESULTS.md: the host alignment curve and the per-layer profile pruned vs pruned-a8.

    .venv/bin/python benchmarks/make_results.py                 # measure, then write RESULTS.md
    .venv/bin/python benchmarks/make_results.py --trials 256    # tune the aligned variants first
    .venv/bin/python benchmarks/make_results.py --render-only   # re-render from the saved JSON

Measures with the library calls behind ``tvmflow sweep --from pruned --align 1,2,4,8,16,32
--target host`` and ``tvmflow profile --target host --variant pruned --against pruned-a8``;
the raw data goes to ``benchmarks/results/`` (JSON, CSV, PNG).  The section between the
``BOARD`` markers of RESULTS.md (the emulated-board run, written by the board engineer) and the
"Your own model" section (``benchmarks/own_models.py``'s) are kept as they are.  Run it on an otherwise idle machine: the 2 cores are shared by everything.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results"
RESULTS = ROOT / "RESULTS.md"
SWEEP_DIR = OUT / "sweep-host-pruned"
PROFILE_JSON = OUT / "profile-host-pruned-vs-pruned-a8.json"
BOARD_BEGIN, BOARD_END = "<!-- BOARD:BEGIN -->", "<!-- BOARD:END -->"
OWN_END = "<!-- OWN:END -->"            # the end of benchmarks/own_models.py's section
BOARD_PLACEHOLDER = """\
*Not measured yet.*  This section is for the run on the emulated arm64 board (QEMU user-mode
emulation of an aarch64 root file system on this x86 host, reached through TVM RPC): its
latencies are those of the emulator, **not** of a real Cortex-A board, and only the ratios
between variants compiled the same way say anything."""


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def measure(args) -> None:
    import os
    sys.path.insert(0, str(ROOT))
    if args.schedules:  # a log root of its own: every variant tuned with the same budget
        os.environ["TVMFLOW_SCHEDULES"] = str(Path(args.schedules).resolve())
        os.environ["TVMFLOW_ARTIFACTS_DIR"] = str(Path(args.schedules).resolve() / "artifacts")
    from tvmflow.measure.profile import compare_profiles, write_json
    from tvmflow.experiments.sweep import sweep
    OUT.mkdir(parents=True, exist_ok=True)
    if not args.skip_sweep:
        sweep("pruned", args.align, "host", trials=args.trials, per_round=args.per_round,
              rounds=args.rounds,
              repeat=args.repeat, out_dir=SWEEP_DIR, on_step=_say)
        shutil.rmtree(SWEEP_DIR / "modules", ignore_errors=True)
    if not args.skip_profile:
        cmp = compare_profiles(["pruned", "pruned-a8"], "host", rounds=args.profile_rounds,
                               on_step=_say)
        write_json(cmp, PROFILE_JSON)


def _board_section() -> str:
    if RESULTS.is_file():
        text = RESULTS.read_text()
        m = re.search(re.escape(BOARD_BEGIN) + r"\n(.*?)\n?" + re.escape(BOARD_END), text, re.S)
        if m and m.group(1).strip():
            return m.group(1).rstrip()
    return BOARD_PLACEHOLDER


def _own_models_section() -> str:
    """The section benchmarks/own_models.py writes (between its markers), kept as it is."""
    if RESULTS.is_file():
        text = RESULTS.read_text()
        start = text.find("\n## Your own model")
        if start >= 0 and OWN_END in text:
            return text[start:text.index(OWN_END) + len(OWN_END)] + "\n"
    return ""


def _md_table(columns, rows) -> str:
    lines = ["| " + " | ".join(columns) + " |",
             "|" + "|".join("---" if i < 2 else "---:" for i in range(len(columns))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _caveat(rows) -> str:
    """What the tuning budget behind the curve was, from each row's schedules column."""
    trials = [int(m.group(1)) for r in rows
              if (m := re.search(r"(\d+) trials", str(r.get("schedules", ""))))]
    if not trials:
        return ("Caveat: no tuning record was applied; these are TVM's default schedules, "
                "which say little about what tuned code would do.")
    spread = (f"{min(trials)} trials each" if min(trials) == max(trials)
              else f"{min(trials)}–{max(trials)} trials per variant")
    return (f"Caveat: the variants' schedules had {spread} (last column). A tuned module's "
            "latency also reflects how good a schedule the search found for it, so part of "
            "the differences between neighbouring N is schedule luck, and a larger budget "
            "can change them. The confidence intervals cover the timing noise only, not the "
            "tuning variance.")


def _pipelines(variants: list[str], cpu: str | None) -> str:
    """The pipeline each variant's schedule set (this CPU's) was tuned with, as one line."""
    sys.path.insert(0, str(ROOT))
    from tvmflow.tuning import schedules as S
    from tvmflow.adapter.pipeline import PipelineOptions
    labels: dict[str, list[str]] = {}
    for v in variants:
        meta = S.read_meta(S.schedule_dir("host", v, cpu=cpu)) if cpu else {}
        if meta.get("pipeline"):
            label = PipelineOptions.from_json(meta["pipeline"]).label
            labels.setdefault(label, []).append(f"`{v}`")
    if not labels:
        return ""
    return "Pipeline of the schedule sets: " + "; ".join(
        f"{label} ({', '.join(vs)})" for label, vs in labels.items()) + "."


def _verdict(rows, ref, faster) -> str:
    """Whether an aligned variant with more MACs than N=1 is nevertheless faster."""
    if faster:
        return (f"N = {', '.join(map(str, faster))} "
                + ("has" if len(faster) == 1 else "have")
                + f" more MACs than `{ref['variant']}` (N=1) and " + ("is" if len(faster) == 1 else "are")
                + " nevertheless faster: the 95 % CI lies entirely below N=1's.")
    more_macs = [r["align"] for r in rows if r["macs"] > ref["macs"]]
    return ("No aligned variant with more MACs than N=1 is faster with non-overlapping "
            "95 % confidence intervals on this machine" +
            (f" (more MACs: N = {', '.join(map(str, more_macs))})." if more_macs else "."))


def _budget(trials) -> str:
    """Which schedules the sweep's modules had."""
    return ("the tuned schedules in `schedules/host/<cpu>/` (this CPU's set, else the nearest "
            "CPU's) where they exist (no tuning in the run)"
            if trials is None else "TVM's default schedules (no tuning)" if trials == 0
            else f"each variant's log tuned in the run to at least {trials} MetaSchedule "
            "trials (XGBoost cost model; a log that already had more kept them, and "
            "`--schedules` gives the run a log root of its own), the trials per variant in "
            "the last column")


def _threads_line(machine, prof) -> str:
    tvm_threads = machine.get("threads")
    if not tvm_threads:
        return "The thread count TVM ran with was not recorded for this run."
    prof_threads = sorted({(r.get("machine") or {}).get("threads") for r in prof["results"]}
                          - {None})
    return (f"TVM ran **{tvm_threads} threads** in the sweep and "
            f"{'/'.join(map(str, prof_threads)) or 'an unrecorded number of'} in the profile, as "
            "TVM's `runtime.NumThreads` reported inside the process that ran the code (full "
            "parallelism: the target's `num-cores`), and the schedules were tuned at that count.")


def _sweep_section(sweep) -> str:
    rows = sweep["rows"]
    ref = next(r for r in rows if r["align"] == 1)
    table = _md_table(["N", "variant", "channels", "conv MMACs", "params", "p50 ms", "95 % CI ms",
                       "vs N=1", "schedules"],
                      [[r["align"], f"`{r['variant']}`", " ".join(map(str, r["channels"])),
                        f"{r['macs'] / 1e6:.2f}", f"{r['params']:,}", f"{r['p50_ms']:.3f}",
                        f"{r['ci_low_ms']:.3f} – {r['ci_high_ms']:.3f}",
                        f"{r['p50_ms'] / ref['p50_ms']:.3f}", r["schedules"]] for r in rows])
    png = (SWEEP_DIR / "sweep.png").relative_to(ROOT)
    return f"""## Channel alignment on the host: `tvmflow sweep --from pruned --target host`

`pruned` is network slimming at 0.5 of the original NIN; `pruned-aN` applies micronet's regular
pruning (each layer's channel count rounded to the nearest multiple of N, ties up, capped at the
original width, counts below N unchanged). Schedules: {_budget(sweep["trials"])}.
{sweep['samples']} samples per variant.

{table}

{_verdict(rows, ref, sweep["faster_with_more_macs"])}

{_caveat(rows)}

![latency and MACs against N]({png})

The whole sweep (planning, {'tuning, ' if sweep["trials"] else ''}compiling {len({r['variant'] for r in rows})} modules, measuring) took
**{sweep["elapsed_s"] / 60:.1f} min** on this host. Data: `{(SWEEP_DIR / 'sweep.json').relative_to(ROOT)}`,
`{(SWEEP_DIR / 'sweep.csv').relative_to(ROOT)}`.
"""


def _profile_section(prof) -> str:
    r0, r1 = prof["results"]
    return f"""## Per-layer latency: `tvmflow profile --target host --variant pruned --against pruned-a8`

Each fused operator of the compiled module (= each TIR PrimFunc the Relax VM calls = each tuning
task) timed with `time_evaluator` on the buffers it gets in a real run, attributed to its layer
(conv + bias + ReLU epilogue fused; pools are rows of their own), medians of {r0['rounds']} interleaved
rounds. Schedules: `{r0['variant']}` {r0['schedules']}, `{r1['variant']}` {r1['schedules']}.
The kernels account for {100 * r0['coverage']:.0f} % (`{r0['variant']}`) and {100 * r1['coverage']:.0f} %
(`{r1['variant']}`) of the end-to-end time of `main` (below 100 %: the VM's own work, allocation
and calls; above: timing noise between the separately timed kernels and `main`).

{_md_table(prof["columns"], prof["rows"])}

Data: `{PROFILE_JSON.relative_to(ROOT)}`.
"""


def render() -> str:
    sweep = json.loads((SWEEP_DIR / "sweep.json").read_text())
    prof = json.loads(PROFILE_JSON.read_text())
    machine = sweep["machine"]
    pipelines = _pipelines([r["variant"] for r in sweep["rows"]],
                           (machine.get("detected") or {}).get("llvm_cpu"))
    return f"""# Results

Measured by `benchmarks/make_results.py` (regenerate: `.venv/bin/python benchmarks/make_results.py`)
on **{machine['name']}**, TVM target `{json.dumps(machine['target'])}`.
{_threads_line(machine, prof)}
{pipelines}
Latencies are p50 of single runs timed on the device by TVM's `time_evaluator`, with the
distribution-free 95 % confidence interval of the median; variants are measured in
interleaved rounds so that machine drift hits all of them alike.

{_sweep_section(sweep)}
{_profile_section(prof)}
## Emulated board (EMULATION)

{BOARD_BEGIN}
{_board_section()}
{BOARD_END}
{_own_models_section()}"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=None,
                    help="tune each variant with N trials first (default: existing schedules)")
    ap.add_argument("--schedules", default=None,
                    help="tuning log root for this run (TVMFLOW_SCHEDULES; modules go to its "
                         "artifacts/): with --trials, all variants get the same budget")
    ap.add_argument("--per-round", type=int, default=16,
                    help="tuning candidates per round (16: all 13 tasks tuned within 208 trials)")
    ap.add_argument("--align", default="1,2,4,8,16,32")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--profile-rounds", type=int, default=30)
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--skip-profile", action="store_true")
    ap.add_argument("--render-only", action="store_true", help="only rewrite RESULTS.md")
    args = ap.parse_args()
    if not args.render_only:
        measure(args)
    RESULTS.write_text(render())
    _say(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
