"""``tvmflow compare``: interleaved rounds, the report object and all its renderings."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tvmflow.errors import TvmflowError
from tvmflow.measure.report import BenchReport, VariantResult
from tvmflow.measure.stats import Latency


# ----------------------------------------------------------------------------- unit level


class FakeRunner:
    """Records the order of timing calls; returns fixed latencies."""

    def __init__(self, variant, kind, log, value=1e-3):
        self.variant, self.kind, self.log, self.value = variant, kind, log, value
        self.info = {}

    def run(self, n=1):
        pass

    def time(self, repeat):
        self.log.append((self.variant, self.kind))
        return np.full(repeat, self.value)

    def close(self):
        pass


def _measure_order(interleave: bool, rounds: int = 3):
    from tvmflow.measure.bench import BenchOptions
    from tvmflow.measure.rounds import measure
    log = []
    report = BenchReport("compare", "host")
    runners = {}
    for v in ("A", "B", "C"):
        report.results.append(VariantResult(v, 1, 1))
        runners[v] = [FakeRunner(v, "tvm", log), FakeRunner(v, "torch", log)]
    opts = BenchOptions(warmup=0, min_repeats=6, min_time=0, rounds=rounds, settle=0)
    measure(report, runners, opts, interleave=interleave, say=lambda m: None,
             after_round=lambda: None)
    timed = log[6:]                      # the first 6 calls are the latency probes
    return report, timed


def test_compare_interleaves_variants_in_rounds():
    report, timed = _measure_order(interleave=True)
    one_round = [(v, k) for v in "ABC" for k in ("tvm", "torch")]
    assert timed == one_round * 3
    assert all(r.latency["tvm"].n == 6 for r in report.results)   # 3 rounds x 2 runs


def test_bench_measures_variants_one_after_the_other():
    _, timed = _measure_order(interleave=False)
    expected = [(v, k) for v in "ABC" for _ in range(3) for k in ("tvm", "torch")]
    assert timed == expected


def _synthetic(aligned_factor: float, seed: int = 0, emulated: bool = False) -> BenchReport:
    from tvmflow.spec.registry import get_spec
    rng = np.random.default_rng(seed)
    rep = BenchReport("compare", "host", environment={"emulated": emulated, "host_cores": 2,
                                                      "target_dict": {"kind": "llvm"}})
    for name, ms in (("original", 1.2), ("pruned", 0.50), ("pruned-a8", 0.50 * aligned_factor)):
        spec = get_spec(name)
        r = VariantResult(name, spec.macs, spec.params, trials=768)
        r.latency["tvm"] = Latency(rng.normal(ms, 0.01, 300) * 1e-3)
        r.latency["onnxruntime"] = Latency(rng.normal(ms * 0.9, 0.01, 300) * 1e-3)
        r.first_run["tvm"] = {"latency_s": ms * 5e-3, "rpc_round_trip_s": 0.0}
        rep.results.append(r)
    return rep


def test_report_figures_and_alignment_significant():
    rep = _synthetic(0.8)
    pruned = rep.result("pruned")
    assert rep.speedup(pruned) == pytest.approx(rep.result("original").p50() / pruned.p50())
    assert pruned.gflops() == pytest.approx(2 * pruned.macs / pruned.p50() / 1e9)
    ci = rep.alignment()
    assert ci.significant and ci.hi < 1
    sentence = rep.alignment_sentence()
    assert "pruned-a8 / pruned latency" in sentence and "faster" in sentence
    assert "significant: the 95% CI excludes 1" in sentence


def test_alignment_without_a_difference_says_so():
    sentence = _synthetic(1.0).alignment_sentence()
    assert "NOT significant: the 95% CI includes 1" in sentence


def test_any_pair_of_compared_variants(tmp_path):
    """compare --pair A,B: the ratio line is about A and B, and survives the JSON round trip."""
    rep = _synthetic(0.8)
    rep.options["pair"] = ["pruned", "original"]
    ci = rep.alignment()
    want = rep.result("pruned").p50() / rep.result("original").p50()
    assert ci.ratio == pytest.approx(want, rel=0.02) and ci.significant
    sentence = rep.alignment_sentence()
    assert sentence.startswith("Pair effect (TVM): pruned / original latency = ")
    back = BenchReport.from_json(rep.to_json())
    assert back.pair == ("pruned", "original")
    assert json.loads(rep.to_json())["alignment"]["aligned"] == "pruned"
    assert _synthetic(0.8).alignment_sentence().startswith("Alignment effect (TVM): pruned-a8 / pruned")


def test_all_renderings_come_from_one_report(tmp_path):
    rep = _synthetic(0.8)
    data = json.loads(rep.to_json())
    assert data["alignment"]["tvm"]["significant"] is True
    assert len(data["results"][1]["latency"]["tvm"]["samples"]) == 300
    back = BenchReport.from_json(rep.to_json())
    assert back.result("pruned").p50() == rep.result("pruned").p50()
    rows = rep.to_csv().strip().splitlines()
    assert len(rows) == 1 + 3 * 2 and rows[0].startswith("variant,runner,n,p50_ms")
    md = rep.to_markdown()
    assert "| variant | trials (tasks) | TVM p50 ms |" in md and "Alignment effect (TVM)" in md
    assert "First run pruned:" in md
    from rich.console import Console
    console = Console(width=250, record=True)
    console.print(rep.to_table())
    text = console.export_text()
    assert "pruned-a8" in text and "ORT p50 ms" in text and "TVM/ORT" in text
    png = rep.to_png(tmp_path / "r.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_emulated_and_partial_reports_say_so():
    rep = _synthetic(0.9, emulated=True)
    rep.partial, rep.error = True, "board died"
    assert "EMULATED" in rep.title() and "PARTIAL" in rep.title()
    md = rep.to_markdown()
    assert "these are emulation timings" in md and "PARTIAL RESULTS" in md
    assert json.loads(rep.to_json())["emulated"] is True


def test_save_refuses_to_overwrite_without_force(tmp_path):
    rep = _synthetic(0.9)
    paths = rep.save(tmp_path / "o")
    assert set(paths) == {"json", "csv", "md", "png"}
    with pytest.raises(TvmflowError, match="refusing to overwrite"):
        rep.save(tmp_path / "o")
    rep.save(tmp_path / "o", force=True)


# ----------------------------------------------------------------------------- end to end


def test_compare_cli_through_local_rpc_server(artifacts, tmp_path):
    out = tmp_path / "cmp"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TVM_TRACKER")}
    env.update(COLUMNS="250", TVMFLOW_ARTIFACTS_DIR=str(artifacts))
    r = subprocess.run([sys.executable, "-m", "tvmflow", "compare", "-v", "pruned,pruned-a8",
                        "--warmup", "1", "--min-repeats", "6", "--min-time", "0", "--rounds", "3",
                        "--per-layer", "pruned,pruned-a8", "-o", str(out)],
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    assert "Alignment effect (TVM): pruned-a8 / pruned latency" in r.stdout
    assert "TVM / best baseline" in r.stdout
    assert "round 3/3" in r.stderr
    data = json.loads((out / "report.json").read_text())
    assert data["environment"]["route_mode"] == "local-rpc"     # compare's default: real RPC
    assert [x["variant"] for x in data["results"]] == ["pruned", "pruned-a8"]
    for res in data["results"]:
        assert res["check"]["ok"] is True
        for kind in ("tvm", "torch", "onnxruntime"):
            assert res["latency"][kind]["n"] == 6             # 3 rounds x 2 runs
    assert data["alignment"]["tvm"]["ci95"][0] <= data["alignment"]["tvm"]["ratio"]
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert len((out / "report.csv").read_text().strip().splitlines()) == 1 + 2 * 3
    assert "Alignment effect" in (out / "report.md").read_text()
    # the layer-by-layer side-by-side, with each layer's channels
    assert "per-layer latency" in r.stdout
    _check_per_layer(json.loads((out / "per_layer.json").read_text()),
                     (out / "per_layer.md").read_text())


def _check_per_layer(side: dict, md: str) -> None:
    """per_layer.json / .md of ``compare --per-layer pruned,pruned-a8``: each variant's conv
    layers carry its own channel counts (conv0: 47 vs 48 outputs), with measured times."""
    from tvmflow.spec.registry import get_spec
    assert side["variants"] == ["pruned", "pruned-a8"]
    assert [r["variant"] for r in side["results"]] == ["pruned", "pruned-a8"]
    for res in side["results"]:
        assert res["rounds"] == 10 and len(res["end_to_end_ms"]) == 10
        layers = {row["name"]: row for row in res["layers"]}
        for geo in get_spec(res["variant"]).layers():
            row = layers[geo["name"]]
            assert (row["cin"], row["cout"], row["groups"]) == (geo["cin"], geo["cout"],
                                                                geo["groups"]), row
            assert row["median_ms"] > 0
    conv0 = {r["variant"]: next(x for x in r["layers"] if x["name"] == "conv0")
             for r in side["results"]}
    assert (conv0["pruned"]["cout"], conv0["pruned-a8"]["cout"]) == (47, 48)
    # the side-by-side row of conv0: cin/cout of each variant in its own column
    cols = side["columns"]
    row = next(r for r in side["rows"] if r[0] == "conv0")
    assert (row[cols.index("pruned cin/cout")], row[cols.index("pruned-a8 cin/cout")]) == \
        ("3/47", "3/48")
    assert "| conv0 | 3/47 |" in md and " | 3/48 | " in md.split("| conv0 |")[1].split("\n")[0]


def test_per_layer_needs_two_known_variants_on_this_machine(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "tvmflow", "compare", *args, "-o",
                               str(tmp_path / "x")], capture_output=True, text=True, timeout=120)
    r = run("--per-layer", "pruned")
    assert r.returncode == 2 and "Error: --per-layer takes two different variants" in r.stderr
    r = run("--per-layer", "pruned,prunned-a8")
    assert r.returncode == 2 and "Error: unknown variant 'prunned-a8'" in r.stderr
    r = run("--target", "rpi4", "--per-layer", "pruned,pruned-a8")
    assert r.returncode == 2 and "Error: --per-layer profiles on this machine" in r.stderr
    assert not (tmp_path / "x").exists()


def test_noisy_runners_get_one_warning_with_a_hint():
    rep = _synthetic(0.8)
    assert not any("varies" in w for w in rep.warnings())
    rng = np.random.default_rng(9)
    for name in ("pruned", "original"):
        rep.result(name).latency["tvm"] = Latency(rng.normal(1e-3, 1e-4, 200))
    (warning,) = [w for w in rep.warnings() if "varies" in w]
    assert "pruned [TVM]" in warning and "original [TVM]" in warning
    assert "governor" in warning and "busy board" in warning
    assert f"Warning: {warning}" in rep.footer()


def test_alignment_line_warns_when_tuning_differs():
    rep = _synthetic(0.8)
    assert "CAUTION" not in rep.alignment_sentence()
    rep.result("pruned-a8").trials, rep.result("pruned-a8").coverage = 144, "9/13"
    sentence = rep.alignment_sentence()
    assert "CAUTION: the two modules are not tuned alike (pruned-a8: 144, 9/13 tasks tuned; " \
           "pruned: 768)" in sentence
    # a budget overshot by a batch's stragglers is still "alike"; a tenth more is not
    rep.result("pruned-a8").trials, rep.result("pruned-a8").coverage = 770, None
    assert "CAUTION" not in rep.alignment_sentence()
    rep.result("pruned-a8").trials = 860
    assert "CAUTION" in rep.alignment_sentence()
