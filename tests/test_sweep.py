"""tvmflow sweep: aligned channel lists, variant files, and a tiny end-to-end sweep."""

from __future__ import annotations

import csv
import json
import tomllib

import pytest

from tvmflow.errors import TvmflowError
from tvmflow.spec.registry import get_spec
from tvmflow.experiments.sweep_plan import aligned_channels, parse_aligns, plan_sweep


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    d = tmp_path / "models"
    d.mkdir()
    monkeypatch.setenv("TVMFLOW_MODEL_PATH", str(d))
    return d


def test_n1_is_pruned_and_n8_is_pruned_a8():
    pruned, a8, original = get_spec("pruned"), get_spec("pruned-a8"), get_spec("original")
    assert aligned_channels(pruned.channels, original.channels, 1) == list(pruned.channels)
    assert aligned_channels(pruned.channels, original.channels, 8) == list(a8.channels)
    # nearest multiple (N=8: 116 is a tie, goes up to 120), below N unchanged, capped
    assert aligned_channels(pruned.channels, original.channels, 16) == [48, 96, 48, 128, 112, 96, 112, 80]
    assert aligned_channels(pruned.channels, original.channels, 64) == [47, 64, 47, 128, 128, 64, 128, 64]
    assert aligned_channels([100], [101], 8) == [101]  # tie up to 104, capped at 101
    assert aligned_channels([200], [240], 128) == [240]  # 256 is nearer, capped at 240
    with pytest.raises(TvmflowError):
        aligned_channels([1, 2], [3], 2)


def test_plan_reuses_and_registers(models_dir):
    plan = plan_sweep("pruned", "1,8,12", models_dir=models_dir)
    by_n = {v.align: v for v in plan.variants}
    assert (by_n[1].name, by_n[1].reused) == ("pruned", "source")
    assert (by_n[8].name, by_n[8].reused) == ("pruned-a8", "existing")  # not overwritten
    assert by_n[12].name == "pruned-a12" and by_n[12].reused is None
    assert sorted(p.name for p in models_dir.iterdir()) == ["pruned-a12.toml"]
    data = tomllib.loads((models_dir / "pruned-a12.toml").read_text())
    assert data["base"] == "original" and data["prune"]["align"] == 12
    spec = get_spec("pruned-a12")  # registered: the registry finds it on TVMFLOW_MODEL_PATH
    assert list(spec.channels) == [48, 96, 48, 120, 120, 96, 108, 84]
    assert spec.kernels == get_spec("original").kernels
    # a second plan reuses the file it wrote
    again = plan_sweep("pruned", [12], models_dir=models_dir)
    assert again.variants[0].reused == "existing"


def test_plan_refuses_to_overwrite_a_different_variant(models_dir):
    (models_dir / "pruned-a4.toml").write_text(
        'name = "pruned-a4"\nbase = "original"\nchannels = [8, 8, 8, 8, 8, 8, 8, 8]\n')
    with pytest.raises(TvmflowError, match="already exists"):
        plan_sweep("pruned", [4], models_dir=models_dir)


def test_parse_aligns():
    assert parse_aligns("1, 2,4,2") == [1, 2, 4]
    for bad in ("0", "a", ""):
        with pytest.raises(TvmflowError):
            parse_aligns(bad)


def test_checkpoint_source(models_dir, tmp_path):
    import torch
    from tvmflow.spec.nin import build_model
    spec = get_spec("pruned")
    ckpt = tmp_path / "mine.pth"
    torch.save({"cfg": list(spec.channels), "state_dict": build_model(spec).state_dict()}, ckpt)
    plan = plan_sweep(ckpt, [1, 8], models_dir=models_dir)
    assert plan.source.name == "mine" and plan.base.name == "original"
    assert [v.name for v in plan.variants] == ["mine", "mine-a8"]
    assert list(plan.variants[1].channels) == list(get_spec("pruned-a8").channels)
    assert get_spec("mine").checkpoint == str(ckpt.resolve())


def test_cli_tiny_sweep_writes_outputs(run_cli, tmp_path):
    models, out = tmp_path / "models", tmp_path / "out"
    models.mkdir()
    proc = run_cli("sweep", "--from", "pruned", "--align", "1,64", "--target", "host",
                   "--trials", "0", "--rounds", "2", "--repeat", "2", "-o", out,
                   "--models-dir", models, "--per-layer", model_path=models, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert (models / "pruned-a64.toml").is_file()
    data = json.loads((out / "sweep.json").read_text())
    assert [r["align"] for r in data["rows"]] == [1, 64]
    assert [r["variant"] for r in data["rows"]] == ["pruned", "pruned-a64"]
    for row in data["rows"]:
        assert len(row["samples_ms"]) == 4
        assert row["ci_low_ms"] <= row["p50_ms"] <= row["ci_high_ms"]
        assert row["schedules"].startswith("default")
    assert data["rows"][1]["macs"] == get_spec("original").replace(
        channels=[47, 64, 47, 128, 128, 64, 128, 64]).macs
    with open(out / "sweep.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["variant"] for r in rows] == ["pruned", "pruned-a64"]
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "pruned-a64" in proc.stdout
    # --per-layer: the side-by-side profile of the two variants, each layer with its channels
    side = json.loads((out / "per_layer.json").read_text())
    assert side["variants"] == ["pruned", "pruned-a64"]
    block2 = next(r for r in side["rows"] if r[0] == "block2")
    assert block2[1] == "47/93" and block2[4] == "47/64"
    assert "per-layer latency" in proc.stdout


def test_cli_bad_align(run_cli):
    proc = run_cli("sweep", "--from", "pruned", "--align", "1,x", "--trials", "0")
    assert proc.returncode == 2
    assert "Error: bad alignment 'x'" in proc.stderr


def test_cli_unknown_source(run_cli):
    proc = run_cli("sweep", "--from", "prunde", "--trials", "0")
    assert proc.returncode == 2
    assert "Error: unknown variant 'prunde'" in proc.stderr
