"""Network slimming (`tvmflow prune`): selection rule, exact weight surgery, seed numbers, errors."""

from __future__ import annotations

import copy
import json
import tomllib

import pytest
import torch

from tvmflow.errors import TvmflowError
from tvmflow.spec.nin import BN_KEYS, build_model, count_params, load_checkpoint_file, randomize
from tvmflow.spec.prune import align_channels, apply_selection, prune, select_channels
from tvmflow.spec.nin import create_model
from tvmflow.spec.registry import get_spec

SEED_REMAIN = [47, 93, 47, 122, 116, 90, 105, 83]      # normal pruning at 0.5 in the seed
SEED_ALIGNED = [48, 96, 48, 120, 120, 88, 104, 80]     # the same, regular pruning to 8
ORIGINAL_WIDTHS = [192, 160, 96, 192, 192, 192, 192, 192]


# ---- 1. the rules ---------------------------------------------------------------------------

def test_align_channels_seed_numbers():
    got = [align_channels(r, w, 8) for r, w in zip(SEED_REMAIN, ORIGINAL_WIDTHS)]
    assert got == SEED_ALIGNED
    assert sum(SEED_REMAIN) == 703 and sum(got) == 704


@pytest.mark.parametrize("remain,width,n,expected", [
    (116, 192, 8, 120),   # tie (112 and 120 both 4 away): rounds up
    (12, 100, 8, 16),     # tie again
    (13, 100, 8, 16),
    (11, 100, 8, 8),
    (47, 47, 8, 47),      # nearest is 48, capped at the layer width
    (45, 46, 8, 46),      # ties up to 48, capped at 46
    (5, 100, 8, 5),       # remain < N is left as is
    (8, 100, 8, 8),       # already a multiple
    (64, 192, 16, 64),
    (37, 192, 1, 37),     # align 1 changes nothing
])
def test_align_channels_rules(remain, width, n, expected):
    assert align_channels(remain, width, n) == expected


def test_select_channels_strict_threshold_and_empty_layer():
    gammas = [torch.tensor([0.01, -0.03, 0.02]), torch.tensor([1.0, -2.0, 3.0, 4.0])]
    # sorted |g|: .01 .02 .03 1 2 3 4 -> threshold = sorted[int(7 * .5)] = 1; keep |g| > 1
    keep = select_channels(gammas, 0.5)
    assert [k.tolist() for k in keep] == [[1], [1, 2, 3]]  # empty layer keeps its largest |g|
    assert all(k.dtype == torch.long for k in keep)


def test_select_channels_align_takes_top_k():
    g = torch.tensor([0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4, 0.5, 0.05, 0.95, 0.15])
    small = torch.tensor([0.01, 0.012, 0.011, 0.013])
    # 16 values, threshold = sorted[8] = 0.3: layer 0 keeps the 7 above it, layer 1 none
    assert [k.tolist() for k in select_channels([g, small], 0.5)] == [[0, 2, 4, 6, 7, 8, 10], [3]]
    # align 4: 7 -> 8, the top 8 by |g| (adds 0.3 at index 5); the emptied layer keeps 1 < 4
    assert [k.tolist() for k in select_channels([g, small], 0.5, align=4)] == [
        [0, 2, 4, 5, 6, 7, 8, 10], [3]]
    # align 3: 7 -> 6, drops the smallest kept (0.4 at index 7)
    assert [k.tolist() for k in select_channels([-g, small], 0.5, align=3)] == [
        [0, 2, 4, 6, 8, 10], [3]]


# ---- fixtures -------------------------------------------------------------------------------

def _original(seed: int):
    return randomize(build_model(get_spec("original"), load_checkpoint=False), seed)


def _set_gammas(model, per_layer):
    sd = model.state_dict()
    with torch.no_grad():
        for key, values in zip(BN_KEYS, per_layer):
            sd[f"{key}.weight"].copy_(values)
    return model


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """An original NIN whose |gamma|s make 0.5 pruning keep exactly the seed's counts."""
    gen = torch.Generator().manual_seed(7)
    total = sum(ORIGINAL_WIDTHS)
    n_large = sum(SEED_REMAIN)
    large = torch.linspace(1.0, 2.0, n_large)[torch.randperm(n_large, generator=gen)]
    small = torch.linspace(0.01, 0.5, total - n_large)[torch.randperm(total - n_large, generator=gen)]
    per_layer, large_idx = [], []
    li = si = 0
    for width, count in zip(ORIGINAL_WIDTHS, SEED_REMAIN):
        perm = torch.randperm(width, generator=gen)
        values = torch.empty(width)
        values[perm[:count]] = large[li:li + count]
        values[perm[count:]] = small[si:si + width - count]
        li, si = li + count, si + width - count
        signs = torch.where(torch.rand(width, generator=gen) < 0.3, -1.0, 1.0)  # |gamma| counts
        per_layer.append(values * signs)
        large_idx.append(sorted(perm[:count].tolist()))
    model = _set_gammas(_original(1), per_layer)
    path = tmp_path_factory.mktemp("seeded") / "nin_sparse.pth"
    torch.save(model.state_dict(), path)  # a plain state_dict
    return dict(path=path, model=model, gammas=per_layer, large_idx=large_idx)


# ---- 2. the pruned model computes what the masked original computes -------------------------

@pytest.mark.parametrize("ratio,align", [(0.6, None), (0.45, 8)])
def test_pruned_equals_masked_original(tmp_path, monkeypatch, ratio, align):
    model = _original(3)
    gen = torch.Generator().manual_seed(11)
    total = sum(ORIGINAL_WIDTHS)
    distinct = (torch.linspace(0.05, 1.5, total) * torch.where(
        torch.rand(total, generator=gen) < 0.5, -1.0, 1.0))[torch.randperm(total, generator=gen)]
    _set_gammas(model, torch.split(distinct, ORIGINAL_WIDTHS))
    src = tmp_path / "src.pth"
    torch.save({"cfg": ORIGINAL_WIDTHS, "state_dict": model.state_dict()}, src)

    result = prune(src, ratio, align=align, name="slimmed", out_dir=tmp_path / "models")
    assert sum(result.channels) < total

    masked = copy.deepcopy(model)
    msd = masked.state_dict()
    with torch.no_grad():
        for key, kept, width in zip(BN_KEYS, result.keep, ORIGINAL_WIDTHS):
            drop = torch.ones(width, dtype=torch.bool)
            drop[kept] = False
            msd[f"{key}.weight"][drop] = 0.0
            msd[f"{key}.bias"][drop] = 0.0

    # the new variant is registered through its file, and loads its checkpoint
    monkeypatch.setenv("TVMFLOW_MODEL_PATH", str(tmp_path / "models"))
    pruned = create_model("slimmed")
    assert list(pruned.spec.channels) == result.channels
    assert count_params(pruned) == result.params_after == get_spec("slimmed").params

    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(5)).double()
    with torch.no_grad():
        want = masked.double()(x)
        got = pruned.double()(x)
        full = model.double()(x)
    assert want.abs().sum() > 0
    assert not torch.allclose(want, full, rtol=1e-3, atol=1e-3)  # pruning changed something
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)


def test_apply_selection_copies_by_index():
    spec = get_spec("original")
    sd = _original(4).state_dict()
    keep = [torch.tensor([0, 5, 7]) for _ in range(8)]
    out = apply_selection(sd, keep, spec)
    assert out["tnn_bin.0.weight"].shape == (3, 3, 5, 5)
    assert torch.equal(out["tnn_bin.2.conv.weight"], sd["tnn_bin.2.conv.weight"][[0, 5, 7]][:, [0, 5, 7]])
    assert torch.equal(out["tnn_bin.3.bn.running_var"], sd["tnn_bin.3.bn.running_var"][[0, 5, 7]])
    assert torch.equal(out["tnn_bin.11.weight"], sd["tnn_bin.11.weight"][:, [0, 5, 7]])
    assert torch.equal(out["tnn_bin.11.bias"], sd["tnn_bin.11.bias"])
    assert torch.equal(out["tnn_bin.12.running_mean"], sd["tnn_bin.12.running_mean"])


# ---- 3. the seed's numbers: pruned and pruned-a8 ---------------------------------------------

def test_seed_ratio_half_gives_pruned(seeded, tmp_path):
    r = prune(seeded["path"], 0.5, name="again", out_dir=tmp_path)
    assert r.channels == list(get_spec("pruned").channels) == SEED_REMAIN
    assert r.keep == seeded["large_idx"]
    assert r.params_after == 276_943 == get_spec("pruned").params
    assert r.macs_after == 61_608_640
    assert r.params_before == 969_822 and r.align == 1
    saved = load_checkpoint_file(r.checkpoint_path)
    assert saved["cfg"] == SEED_REMAIN
    pruned = build_model(get_spec("pruned"), load_checkpoint=False)
    pruned.load_state_dict(saved["state_dict"])
    assert count_params(pruned) == 276_943


def test_seed_align8_through_cli_is_a_sixth_variant(seeded, tmp_path, run_cli):
    out = tmp_path / "mine"
    proc = run_cli("prune", seeded["path"], "--ratio", "0.5", "--align", "8",
                   "--name", "slim-a8", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "192 -> 48" in proc.stdout and "275,406" in proc.stdout
    assert str(out / "slim-a8.toml") in proc.stdout

    data = tomllib.loads((out / "slim-a8.toml").read_text())
    assert data["name"] == "slim-a8" and data["base"] == "original"
    assert data["channels"] == SEED_ALIGNED
    assert data["checkpoint"] == "slim-a8.pth"
    assert data["prune"]["ratio"] == 0.5 and data["prune"]["align"] == 8
    assert data["prune"]["source"] == str(seeded["path"].resolve())
    assert 0.5 <= data["prune"]["threshold"] < 1.0

    listing = run_cli("models", "--json", model_path=out)
    assert listing.returncode == 0, listing.stderr
    rows = {r["name"]: r for r in json.loads(listing.stdout)}
    assert len(rows) == 6
    assert rows["slim-a8"]["channels"] == list(get_spec("pruned-a8").channels)
    assert rows["slim-a8"]["params"] == 275_406 and rows["slim-a8"]["macs"] == 62_232_576

    # the layers that grew (47 -> 48) took their largest small gamma; the others shrank to top-k
    sd = load_checkpoint_file(out / "slim-a8.pth")["state_dict"]
    for key, gammas, n in zip(BN_KEYS, seeded["gammas"], SEED_ALIGNED):
        expect = gammas[sorted(gammas.abs().argsort(descending=True)[:n].tolist())]
        assert torch.equal(sd[f"{key}.weight"], expect)


# ---- 4. input formats -----------------------------------------------------------------------

def test_micronet_checkpoint_with_cfg_and_module_prefix(seeded, tmp_path):
    first = prune(seeded["path"], 0.5, name="p1", out_dir=tmp_path)
    ckpt = load_checkpoint_file(first.checkpoint_path)
    # micronet under DataParallel saves "module."-prefixed keys; the cfg names the widths
    wrapped = {"cfg": ckpt["cfg"], "best_acc": 87.76,
               "state_dict": {f"module.{k}": v for k, v in ckpt["state_dict"].items()}}
    torch.save(wrapped, tmp_path / "micronet.pth")
    second = prune(tmp_path / "micronet.pth", 0.3, name="p2", out_dir=tmp_path)
    assert second.channels_before == SEED_REMAIN
    assert all(a <= b for a, b in zip(second.channels, SEED_REMAIN))
    assert second.params_after < 276_943


def test_shapes_not_matching_cfg(seeded, tmp_path):
    first = prune(seeded["path"], 0.5, name="p1", out_dir=tmp_path)
    sd = load_checkpoint_file(first.checkpoint_path)["state_dict"]
    torch.save(sd, tmp_path / "plain_pruned.pth")  # no cfg: read as the original's widths
    with pytest.raises(TvmflowError, match="shapes don't match its cfg"):
        prune(tmp_path / "plain_pruned.pth", 0.5, name="p3", out_dir=tmp_path)


def test_grouped_base_refused():
    with pytest.raises(TvmflowError, match="ungrouped"):
        prune("whatever.pth", 0.5, base="grouped")


# ---- errors through the real CLI ------------------------------------------------------------

def _error(proc, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("ratio", ["0", "1", "1.5", "-0.2"])
def test_cli_ratio_outside_unit_interval(run_cli, seeded, ratio):
    _error(run_cli("prune", seeded["path"], "--ratio", ratio),
           f"Invalid value for '--ratio': {float(ratio)} is not in the range 0.0<x<1.0")


def test_cli_align_below_one(run_cli, seeded):
    _error(run_cli("prune", seeded["path"], "--ratio", "0.5", "--align", "0"),
           "Invalid value for '--align': 0 is not in the range x>=1")


def test_cli_missing_and_unreadable_checkpoint(run_cli, tmp_path):
    _error(run_cli("prune", tmp_path / "nope.pth", "--ratio", "0.5", "-o", tmp_path),
           "nope.pth' does not exist")
    (tmp_path / "junk.pth").write_bytes(b"this is not a torch file\x00\x01")
    _error(run_cli("prune", tmp_path / "junk.pth", "--ratio", "0.5", "-o", tmp_path),
           "cannot load checkpoint", "junk.pth")


def test_cli_shapes_mismatch(run_cli, seeded, tmp_path):
    sd = dict(seeded["model"].state_dict())
    sd["tnn_bin.3.conv.weight"] = sd["tnn_bin.3.conv.weight"][:50]
    torch.save({"cfg": ORIGINAL_WIDTHS, "state_dict": sd}, tmp_path / "bad.pth")
    _error(run_cli("prune", tmp_path / "bad.pth", "--ratio", "0.5", "-o", tmp_path),
           "shapes don't match its cfg", "tnn_bin.3.conv.weight")


def test_cli_refuses_to_overwrite_without_force(run_cli, seeded, tmp_path):
    prune(seeded["path"], 0.5, name="taken", out_dir=tmp_path)
    before = (tmp_path / "taken.toml").read_text()
    _error(run_cli("prune", seeded["path"], "--ratio", "0.4", "--name", "taken", "-o", tmp_path),
           "taken.toml already exists", "--force")
    assert (tmp_path / "taken.toml").read_text() == before
    proc = run_cli("prune", seeded["path"], "--ratio", "0.4", "--name", "taken", "-o", tmp_path,
                   "--force")
    assert proc.returncode == 0, proc.stderr
    assert tomllib.loads((tmp_path / "taken.toml").read_text())["prune"]["ratio"] == 0.4


def test_cli_refuses_a_registered_name(run_cli, seeded, tmp_path):
    _error(run_cli("prune", seeded["path"], "--ratio", "0.5", "--name", "pruned", "-o", tmp_path),
           "variant 'pruned' already exists")


def test_cli_grouped_base(run_cli, seeded):
    _error(run_cli("prune", seeded["path"], "--ratio", "0.5", "--base", "grouped"),
           "pruning needs an ungrouped variant", "'grouped'")


# ---- nothing lost ---------------------------------------------------------------------------

def test_prune_never_writes_a_name_another_file_declares(run_cli, seeded, tmp_path):
    """`prune --name pruned --force` once replaced the shipped variant file: a declared name
    is refused, --force or not, into the workspace or any -o."""
    from tvmflow.workspace import shipped_dir
    shipped = shipped_dir("models") / "pruned.toml"
    before = shipped.read_bytes()
    for out in ([], ["-o", tmp_path]):
        _error(run_cli("prune", seeded["path"], "--ratio", "0.5", "--name", "pruned", "--force",
                       *out), "variant 'pruned' already exists", str(shipped))
    assert shipped.read_bytes() == before and not list(tmp_path.iterdir())
    # a variant file of the user's (TVMFLOW_MODEL_PATH) is no different
    mine = tmp_path / "models"
    mine.mkdir()
    (mine / "mine.toml").write_text('name = "mine"\nbase = "original"\n')
    _error(run_cli("prune", seeded["path"], "--ratio", "0.5", "--name", "mine", "--force",
                   "-o", tmp_path / "out", model_path=mine), "variant 'mine' already exists")
    assert not (tmp_path / "out").exists()


def test_force_replaces_only_what_prune_wrote(run_cli, seeded, tmp_path):
    (tmp_path / "handmade.toml").write_text('name = "handmade"\nbase = "original"\n')
    (tmp_path / "stray.pth").write_bytes(b"not mine")
    for name, existing in (("handmade", "handmade.toml"), ("stray", "stray.pth")):
        _error(run_cli("prune", seeded["path"], "--ratio", "0.5", "--name", name, "-o", tmp_path,
                       "--force"), f"{existing} was not written by tvmflow prune")
    assert (tmp_path / "handmade.toml").read_text() == 'name = "handmade"\nbase = "original"\n'
    assert (tmp_path / "stray.pth").read_bytes() == b"not mine"


def test_prune_writes_into_the_workspace_models_atomically(seeded, monkeypatch, tmp_path):
    monkeypatch.setenv("TVMFLOW_HOME", str(tmp_path))
    r = prune(seeded["path"], 0.5, name="ws")
    assert r.variant_path == tmp_path / "models" / "ws.toml" and r.checkpoint_path.is_file()
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["ws.pth", "ws.toml"]
    assert get_spec("ws").channels == tuple(SEED_REMAIN)       # the workspace is searched
    # a failure half-way (here: torch.save) leaves nothing behind
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        prune(seeded["path"], 0.4, name="half")
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["ws.pth", "ws.toml"]


def _bad_checkpoints(d):
    torch.save([1, 2], d / "list.pth")
    torch.save({"state_dict": 5}, d / "sd-int.pth")
    torch.save({"cfg": 3, "state_dict": {"a": torch.zeros(1)}}, d / "cfg-int.pth")
    torch.save({}, d / "empty-dict.pth")
    torch.save(torch.zeros(2), d / "tensor.pth")
    (d / "empty.pth").write_bytes(b"")
    (d / "text.pth").write_text("hello\n")


@pytest.mark.parametrize("case,fragment", [
    ("empty", "is empty (0 bytes)"), ("text", "is it a PyTorch checkpoint?"),
    ("list", "neither micronet's"), ("tensor", "neither micronet's"),
    ("empty-dict", "neither micronet's"), ("sd-int", "'state_dict' is not a dict of named tensors"),
    ("cfg-int", "its 'cfg' must be a list of channel counts")])
def test_cli_checkpoints_that_are_not_ones(run_cli, tmp_path_factory, case, fragment):
    d = tmp_path_factory.getbasetemp() / "bad-checkpoints"
    if not d.exists():
        d.mkdir()
        _bad_checkpoints(d)
    _error(run_cli("prune", d / f"{case}.pth", "--ratio", "0.5", "-o", d / "out"),
           f"{case}.pth", fragment)
    with pytest.raises(TvmflowError, match="checkpoint"):
        load_checkpoint_file(d / f"{case}.pth")
