"""The variant registry: the five variants' counts, variant files, and their errors."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from tvmflow.errors import TvmflowError
from tvmflow.spec.nin import build_model, count_params, randomize
from tvmflow.spec.nin import create_model
from tvmflow.spec.registry import Variant, VariantSpec, get_spec, list_models

FIVE = {  # params, conv MACs at 1x3x32x32 (micronet.md)
    "original": (969_822, 222_486_528),
    "grouped": (87_390, 46_792_704),
    "grouped-wide": (591_390, 157_679_616),
    "pruned": (276_943, 61_608_640),
    "pruned-a8": (275_406, 62_232_576),
}


def test_models_json_counts_through_cli(run_cli):
    proc = run_cli("models", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["name"] for r in rows] == list(FIVE)
    assert {r["name"]: (r["params"], r["macs"]) for r in rows} == FIVE


def test_models_table_and_pattern_through_cli(run_cli):
    proc = run_cli("models", "pruned*")
    assert proc.returncode == 0, proc.stderr
    assert "pruned-a8" in proc.stdout and "275,406" in proc.stdout
    assert "grouped" not in proc.stdout


def test_list_models_pattern():
    assert list_models("pruned*") == ["pruned", "pruned-a8"]
    assert list_models() == list(FIVE)
    assert list_models("nothing*") == []


@pytest.mark.parametrize("name", list(FIVE))
def test_torch_param_count_equals_spec(name):
    spec = get_spec(name)
    model = create_model(name, pretrained=False)
    assert count_params(model) == spec.params == FIVE[name][0]
    assert spec.macs == FIVE[name][1]


def test_create_model_overrides():
    model = create_model("original", pretrained=False, channels=[96] * 8)
    assert model.spec.channels == (96,) * 8
    assert model.spec.kernels == get_spec("original").kernels
    assert tuple(model.tnn_bin[0].weight.shape) == (96, 3, 5, 5)
    assert tuple(model.tnn_bin[11].weight.shape) == (10, 96, 1, 1)
    assert count_params(model) == model.spec.params < FIVE["original"][0]
    with pytest.raises(TvmflowError, match="channels not divisible by groups"):
        create_model("grouped", pretrained=False, channels=[192, 161, 96, 192, 192, 192, 192, 192])


# ---- the forward pass against a hand-written reference --------------------------------------

def _reference_forward(spec, sd, x, *, shuffle=True, first_relu=True):
    """NIN forward written with torch.nn.functional only, from micronet's definitions."""
    def bn(t, key):
        shape = (1, -1, 1, 1)
        return ((t - sd[f"{key}.running_mean"].view(shape))
                / torch.sqrt(sd[f"{key}.running_var"].view(shape) + 1e-5)
                * sd[f"{key}.weight"].view(shape) + sd[f"{key}.bias"].view(shape))

    def pool(t, p):
        fn = F.max_pool2d if p.kind == "max" else F.avg_pool2d
        return fn(t, p.kernel, p.stride, p.padding)

    def shuffled(t, g):
        # ShuffleNet: channel j of the output is channel (j % g) * (C / g) + j // g of the input
        c = t.shape[1]
        order = [(j % g) * (c // g) + j // g for j in range(c)]
        return t[:, order]

    positions = [None, 2, 3, 5, 6, 7, 9, 10]
    k = spec.kernels
    x = F.conv2d(x, sd["tnn_bin.0.weight"], sd["tnn_bin.0.bias"], padding=k[0] // 2)
    x = bn(x, "tnn_bin.1")  # no ReLU here: block 2 applies it to its input
    for i in range(1, 8):
        if i == 3:
            x = pool(x, spec.pool1)
        if i == 6:
            x = pool(x, spec.pool2)
        if i == 1 and first_relu:
            x = F.relu(x)
        if spec.shuffle[i] and shuffle:
            x = shuffled(x, spec.shuffle[i])
        p = positions[i]
        x = F.conv2d(x, sd[f"tnn_bin.{p}.conv.weight"], sd[f"tnn_bin.{p}.conv.bias"],
                     padding=k[i] // 2, groups=spec.groups[i])
        x = F.relu(bn(x, f"tnn_bin.{p}.bn"))
    x = F.relu(bn(F.conv2d(x, sd["tnn_bin.11.weight"], sd["tnn_bin.11.bias"]), "tnn_bin.12"))
    return x.mean(dim=(2, 3))


@pytest.mark.parametrize("name", ["original", "grouped"])
def test_forward_matches_reference_with_shuffle_and_first_relu(name):
    spec = get_spec(name)
    model = randomize(build_model(spec, load_checkpoint=False), seed=2).double()
    sd = model.state_dict()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(9)).double()
    with torch.no_grad():
        got = model(x)
        want = _reference_forward(spec, sd, x)
        no_relu = _reference_forward(spec, sd, x, first_relu=False)
        no_shuffle = _reference_forward(spec, sd, x, shuffle=False)
    assert got.shape == (2, 10)
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-8)
    # the reference is sensitive to both details, so the match above checks them
    assert not torch.allclose(got, no_relu, rtol=1e-3, atol=1e-4)
    if any(spec.shuffle):
        assert not torch.allclose(got, no_shuffle, rtol=1e-3, atol=1e-4)


# ---- variant files --------------------------------------------------------------------------

def test_sixth_variant_by_adding_a_file(tmp_path, run_cli, monkeypatch):
    (tmp_path / "slim64.toml").write_text(
        'name = "slim64"\ndescription = "every conv 64 wide"\nbase = "original"\n'
        "channels = [64, 64, 64, 64, 64, 64, 64, 64]\n")
    proc = run_cli("models", "--json", model_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert list(rows) == [*FIVE, "slim64"]
    monkeypatch.setenv("TVMFLOW_MODEL_PATH", str(tmp_path))
    assert list_models() == [*FIVE, "slim64"]
    model = create_model("slim64")
    assert rows["slim64"]["params"] == count_params(model)
    assert rows["slim64"]["kernels"] == list(get_spec("original").kernels)
    table = run_cli("models", model_path=tmp_path)
    assert table.returncode == 0 and "slim64" in table.stdout


def _error(proc, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_cli_unknown_variant_suggests(run_cli, tmp_path):
    (tmp_path / "nin.pth").write_bytes(b"")   # exists: the base is checked before the file is read
    _error(run_cli("prune", tmp_path / "nin.pth", "--ratio", "0.5", "--base", "orignal"),
           "unknown variant 'orignal'", "did you mean original")
    _error(run_cli("models", "pruned-a7"), "unknown variant 'pruned-a7'", "did you mean",
           "pruned-a8")
    _error(run_cli("models", "zzz*"), "no variant matches 'zzz*'")


_BAD_FILES = {
    "channels list too short": (
        'name = "short"\nbase = "original"\nchannels = [64, 64]\n',
        ["short.toml", "field 'channels'", "list of 8 integers"]),
    "unknown field": (
        'name = "typo"\nbase = "original"\nchanels = [64, 64, 64, 64, 64, 64, 64, 64]\n',
        ["typo.toml", "chanels"]),
    "bad pool kind": (
        'name = "pooly"\nbase = "original"\npool1 = { kind = "min", kernel = 2, stride = 2 }\n',
        ["pooly.toml", "field 'pool1.kind'"]),
    "toml syntax": ('name = "broken\nchannels = [\n', ["broken.toml", "malformed variant file"]),
    "channels not divisible by groups": (
        'name = "odd"\nbase = "grouped"\nchannels = [192, 161, 96, 192, 192, 192, 192, 192]\n',
        ["odd.toml", "block2 channels not divisible by groups", "groups=2"]),
    "shuffle not dividing channels": (
        'name = "shuf"\nbase = "original"\nshuffle = [0, 0, 7, 0, 0, 0, 0, 0]\n',
        ["shuf.toml", "block3 shuffle of 7 groups doesn't divide its 160 input channels"]),
}


@pytest.mark.parametrize("case", list(_BAD_FILES))
def test_cli_bad_variant_file(case, tmp_path, run_cli):
    """A bad file is an error for the command that asks for it, and one warning line for
    a command that does not (the other variants are listed)."""
    text, fragments = _BAD_FILES[case]
    stem = fragments[0].removesuffix(".toml")
    (tmp_path / f"{stem}.toml").write_text(text)
    _error(run_cli("models", stem, model_path=tmp_path), *fragments)
    proc = run_cli("models", "--json", model_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [r["name"] for r in json.loads(proc.stdout)] == list(FIVE)
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("Warning: ") and all(f in line for f in fragments), line


def test_a_duplicate_name_is_an_error_naming_both_files(tmp_path, run_cli):
    (tmp_path / "zz-original.toml").write_text(
        'name = "original"\nbase = "pruned-a8"\ndescription = "not the original"\n')
    shipped = get_spec("original").source
    _error(run_cli("models", "original", model_path=tmp_path),
           "variant 'original' is declared by 2 files", "zz-original.toml", shipped)
    _error(run_cli("models", "pruned", model_path=tmp_path),          # its base is 'original'
           "pruned.toml: its base 'original'", "zz-original.toml")
    proc = run_cli("models", "grouped", "--json", model_path=tmp_path)  # needs neither
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    proc = run_cli("models", "--json", model_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [r["name"] for r in json.loads(proc.stdout)] == ["grouped", "grouped-wide"]
    assert all(line.startswith("Warning: ") for line in proc.stderr.strip().splitlines())


def test_a_malformed_file_breaks_only_the_variants_that_need_it(tmp_path, monkeypatch):
    (tmp_path / "broken.toml").write_text('name = "broken\n')
    (tmp_path / "child.toml").write_text('name = "child"\nbase = "broken"\n')
    monkeypatch.setenv("TVMFLOW_MODEL_PATH", str(tmp_path))
    assert list_models() == list(FIVE)
    assert get_spec("pruned-a8").name == "pruned-a8"
    with pytest.raises(TvmflowError, match="malformed variant file .*broken.toml"):
        get_spec("broken")
    with pytest.raises(TvmflowError, match="child.toml: its base 'broken': malformed"):
        get_spec("child")


@pytest.mark.parametrize("name", list(FIVE))
def test_variant_record_round_trip(name):
    spec = get_spec(name)
    data = json.loads(json.dumps(spec.to_json()))
    assert Variant.from_json(data) == spec and VariantSpec is Variant
    assert data["source"] == spec.source and data["pool1"]["kind"] in ("max", "avg")
    with pytest.raises(TvmflowError, match="field 'channels'"):
        Variant.from_json(dict(data, channels=[1, 2]))
