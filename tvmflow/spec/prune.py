"""Network slimming of the original NIN, exactly as micronet does it.

Channel selection (see /work/shared/reference/micronet.md, "Pruning"):

* collect |gamma| of the first eight BatchNorm layers (:data:`tvmflow.spec.nin.BN_KEYS`), sort them,
  take ``threshold = sorted[int(total * ratio)]`` and keep the channels with
  ``|gamma| > threshold`` (strictly);
* a layer left empty keeps its largest-|gamma| channel;
* regular pruning to ``align = N``: a layer keeping ``remain`` channels with ``remain % N != 0``
  and ``remain > N`` keeps instead the nearest multiple of N (ties round up, capped at the
  layer width), taking its top-k channels by |gamma|;
* the head conv keeps its 10 outputs and loses the pruned inputs.

Then conv weights are copied as ``w[out_idx][:, in_idx]``, conv biases and the four BN
tensors by ``out_idx``, and the result is saved as micronet's ``{'cfg', 'state_dict'}``
together with a variant file naming it, so that the pruned model is a registered variant.

    >>> result = prune("nin.pth", ratio=0.5, align=8, name="mine", out_dir="/tmp/models")
    >>> result.channels, result.params_after
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tvmflow.errors import TvmflowError
from tvmflow.workspace import Workspace, check_writable
from tvmflow.spec.registry import LAYER_NAMES, NUM_CONVS, VariantSpec, declared_by, get_spec

if TYPE_CHECKING:  # torch is imported lazily: `tvmflow --help` must stay fast
    import torch


@dataclass
class PruneResult:
    """What :func:`prune` did."""

    name: str
    base: str
    ratio: float
    align: int
    threshold: float
    channels_before: list[int]
    channels: list[int]
    keep: list[list[int]]  # kept channel indices per conv, ascending
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    source: Path
    checkpoint_path: Path
    variant_path: Path
    spec: VariantSpec | None = field(default=None, repr=False)

    @property
    def cfg(self) -> list[int]:
        """micronet's name for the channel list."""
        return self.channels

    def rows(self) -> list[dict[str, Any]]:
        return [dict(layer=LAYER_NAMES[i], before=self.channels_before[i], after=self.channels[i])
                for i in range(len(self.channels))]


# ---- pure helpers ---------------------------------------------------------------------------

def align_channels(remain: int, width: int, n: int) -> int:
    """micronet's regular pruning: round ``remain`` to the nearest multiple of ``n``.

    Only when ``remain % n != 0`` and ``remain > n``; ties round up; never above ``width``.
    """
    if n < 1:
        raise TvmflowError(f"align must be at least 1, got {n}")
    if remain % n == 0 or remain <= n:
        return remain
    lower = remain // n * n
    upper = lower + n
    target = lower if remain - lower < upper - remain else upper
    return min(target, width)


def check_ratio_align(ratio: float, align: int | None) -> int:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < ratio < 1.0:
        raise TvmflowError(f"ratio must be strictly between 0 and 1, got {ratio}")
    if align is None:
        return 1
    if isinstance(align, bool) or not isinstance(align, int) or align < 1:
        raise TvmflowError(f"align must be an integer of at least 1, got {align}")
    return align


def slimming_threshold(gammas: list["torch.Tensor"], ratio: float) -> float:
    """The global |gamma| threshold of network slimming: ``sorted[int(total * ratio)]``."""
    import torch
    check_ratio_align(ratio, None)
    flat = torch.cat([g.detach().reshape(-1).abs().float() for g in gammas])
    if flat.numel() == 0:
        raise TvmflowError("no BN weights to rank")
    ordered, _ = torch.sort(flat)
    index = min(int(flat.numel() * ratio), flat.numel() - 1)
    return float(ordered[index])


def _select(gammas: list["torch.Tensor"], ratio: float, align: int | None):
    import torch
    n = check_ratio_align(ratio, align)
    threshold = slimming_threshold(gammas, ratio)
    keep = []
    for g in gammas:
        mag = g.detach().reshape(-1).abs().float()
        mask = mag > threshold
        remain = int(mask.sum())
        if remain == 0:  # micronet: "please turn down the prune_ratio", keep the largest
            remain = 1
            mask[int(torch.argmax(mag))] = True
        target = align_channels(remain, mag.numel(), n)
        if target != remain:
            order = torch.sort(mag, descending=True, stable=True).indices
            idx = order[:target]
        else:
            idx = torch.nonzero(mask).reshape(-1)
        keep.append(torch.sort(idx).values.to(torch.long))
    return keep, threshold


def select_channels(gammas: list["torch.Tensor"], ratio: float,
                    align: int | None = None) -> list["torch.Tensor"]:
    """Indices (ascending LongTensors) of the channels each BN layer keeps."""
    return _select(gammas, ratio, align)[0]


def _strip(state_dict: dict) -> dict:
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def _require_ungrouped(spec: VariantSpec) -> None:
    if any(g != 1 for g in spec.groups) or any(spec.shuffle):
        raise TvmflowError(
            f"pruning needs an ungrouped variant, but {spec.name!r} has groups "
            f"{list(spec.groups)} and shuffle {list(spec.shuffle)}",
            hint="prune a checkpoint of 'original' or another variant with groups all 1")


def apply_selection(state_dict: dict, keep: list["torch.Tensor"], spec: VariantSpec) -> dict:
    """Copy the kept channels of an ungrouped NIN state_dict into a new, smaller one.

    ``spec`` describes ``state_dict`` (before pruning).  Conv weights are copied as
    ``w[out_idx][:, in_idx]``, conv biases and BN weight/bias/running stats by ``out_idx``;
    the head conv keeps its outputs and loses the pruned inputs.
    """
    import torch
    from tvmflow.spec.nin import BN_KEYS, CONV_KEYS, HEAD_BN_KEY

    _require_ungrouped(spec)
    sd = _strip(state_dict)
    if len(keep) != NUM_CONVS:
        raise TvmflowError(f"need kept channels for {NUM_CONVS} layers, got {len(keep)}")

    def get(key: str) -> "torch.Tensor":
        if key not in sd:
            raise TvmflowError(f"state_dict lacks {key}")
        return sd[key]

    out: dict[str, torch.Tensor] = {}
    prev = None
    for i in range(NUM_CONVS):
        idx = torch.as_tensor(keep[i], dtype=torch.long)
        width = spec.channels[i]
        if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= width:
            raise TvmflowError(f"{LAYER_NAMES[i]}: kept indices must be non-empty and within "
                               f"0..{width - 1}")
        conv, bn = CONV_KEYS[i], BN_KEYS[i]
        weight = get(f"{conv}.weight").index_select(0, idx)
        if prev is not None:
            weight = weight.index_select(1, prev)
        out[f"{conv}.weight"] = weight.clone()
        if f"{conv}.bias" in sd:
            out[f"{conv}.bias"] = sd[f"{conv}.bias"].index_select(0, idx).clone()
        for name in ("weight", "bias", "running_mean", "running_var"):
            out[f"{bn}.{name}"] = get(f"{bn}.{name}").index_select(0, idx).clone()
        if f"{bn}.num_batches_tracked" in sd:
            out[f"{bn}.num_batches_tracked"] = sd[f"{bn}.num_batches_tracked"].clone()
        prev = idx
    head = CONV_KEYS[-1]
    out[f"{head}.weight"] = get(f"{head}.weight").index_select(1, prev).clone()
    if f"{head}.bias" in sd:
        out[f"{head}.bias"] = sd[f"{head}.bias"].clone()
    for key, value in sd.items():
        if key.startswith(HEAD_BN_KEY + "."):
            out[key] = value.clone()
    return out


# ---- the command ----------------------------------------------------------------------------

def toml_value(value: Any) -> str:
    """``value`` as a TOML value: booleans, numbers, basic strings, arrays, inline tables
    (anything else is written as its string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value))  # a TOML basic string


HEADER = "# Written by `tvmflow prune` (network slimming)."


def _variant_text(name: str, description: str, base: str, channels: list[int],
                  checkpoint: str, prune_table: dict[str, Any]) -> str:
    lines = [HEADER,
             f"name = {toml_value(name)}",
             f"description = {toml_value(description)}",
             f"base = {toml_value(base)}",
             f"channels = {toml_value(channels)}",
             f"checkpoint = {toml_value(checkpoint)}",
             "",
             "[prune]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in prune_table.items()]
    return "\n".join(lines) + "\n"


def default_name(base: str, ratio: float, align: int) -> str:
    return f"{base}-slim{ratio:g}" + (f"-a{align}" if align > 1 else "")


def _written_by_prune(path: Path, header: str = HEADER) -> bool:
    try:
        with open(path) as fh:
            return fh.readline().rstrip("\n") == header
    except (OSError, UnicodeDecodeError):
        return False


def _check_outputs(name: str, toml_path: Path, data_path: Path, force: bool,
                   header: str = HEADER) -> None:
    """Never a name another variant file declares (shipped or not), with --force or not;
    an existing output only with --force, and only when an earlier prune wrote it."""
    others = [p for p in declared_by(name) if p.resolve() != toml_path.resolve()]
    if others:
        raise TvmflowError(f"variant {name!r} already exists ({others[0]})",
                           hint="prune never replaces or shadows another variant's file, "
                                "--force or not; choose another --name")
    existing = [p for p in (toml_path, data_path) if p.exists()]
    if not existing:
        return
    if not force:
        raise TvmflowError(f"{existing[0]} already exists", hint="pass --force to replace "
                           "what an earlier prune wrote, or choose another --name / -o")
    if not _written_by_prune(toml_path, header):
        raise TvmflowError(f"{existing[0]} was not written by tvmflow prune (--force replaces "
                           "only what prune wrote)", hint="move it away or choose another --name / -o")


def output_paths(name: str, out_dir, force: bool, suffix: str = ".pth",
                 header: str = HEADER) -> tuple[Path, Path]:
    """``<out_dir>/<name>.toml`` and ``<name><suffix>``, checked as above (``out_dir``
    defaults to the workspace's models/)."""
    if not name or any(c.isspace() or c in "/\\" for c in name):
        raise TvmflowError(f"bad --name {name!r}: it must be a non-empty word")
    out_dir = Path(out_dir) if out_dir is not None else Workspace.current().models
    check_writable(out_dir)
    toml_path, data_path = out_dir / f"{name}.toml", out_dir / f"{name}{suffix}"
    _check_outputs(name, toml_path, data_path, force, header)
    try:  # an output directory that cannot be made fails before the work, not after it
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TvmflowError(f"cannot create output directory {out_dir}: "
                           f"{exc.strerror or exc}") from None
    return toml_path, data_path


def _outputs(name: str, base_spec: VariantSpec, out_dir, force: bool) -> tuple[Path, Path]:
    try:
        base_spec.replace(name=name)  # validates the name
    except TvmflowError as exc:
        raise TvmflowError(f"bad --name {name!r}: {exc.message.split(': ', 1)[-1]}") from None
    return output_paths(name, out_dir, force)


def _load(checkpoint, base: str, base_spec: VariantSpec) -> tuple[Path, VariantSpec, dict]:
    """(file, the spec it holds -- its cfg, else the base's --, its state_dict), checked."""
    from tvmflow.spec.nin import NIN, load_checkpoint_file, load_state
    source = Path(checkpoint)
    loaded = load_checkpoint_file(source)
    where = f"checkpoint {source}"
    spec = base_spec
    if loaded["cfg"] is not None:
        try:
            spec = base_spec.replace(channels=[int(c) for c in loaded["cfg"]])
        except (TypeError, ValueError, TvmflowError) as exc:
            reason = exc.message if isinstance(exc, TvmflowError) else str(exc)
            raise TvmflowError(f"{where}: its cfg {loaded['cfg']!r} does not fit variant "
                               f"{base!r}: {reason}") from None
    state = _strip(loaded["state_dict"])
    load_state(NIN(spec), state, where)  # clear error when the shapes don't match the cfg
    return source, spec, state


def _save_atomic(path: Path, write) -> None:
    """``write(tmp)`` then rename over ``path``: the file is whole or absent."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def prune(checkpoint: str | Path, ratio: float, align: int | None = None, name: str | None = None,
          base: str = "original", out_dir: str | Path | None = None,
          force: bool = False) -> PruneResult:
    """Prune a checkpoint of an ungrouped NIN; write the pruned checkpoint and its variant file.

    ``checkpoint`` is micronet's ``{'cfg', 'state_dict'}`` or a plain state_dict (then the
    channels come from ``base``).  Files go to ``out_dir`` (default: the workspace's
    ``models/``): ``<name>.pth`` and ``<name>.toml``, each written atomically.  A name that
    another variant file declares is refused; existing outputs are replaced only with
    ``force``, and only when an earlier prune wrote them.
    """
    n = check_ratio_align(ratio, align)
    base_spec = get_spec(base)  # unknown names fail here, with suggestions
    _require_ungrouped(base_spec)
    name = name or default_name(base, ratio, n)
    toml_path, ckpt_path = _outputs(name, base_spec, out_dir, force)

    import torch  # only now: the checks above answer without loading torch
    from tvmflow.spec.nin import BN_KEYS, NIN, load_state
    source, spec, state = _load(checkpoint, base, base_spec)
    keep, threshold = _select([state[f"{key}.weight"] for key in BN_KEYS], ratio, n)
    new_state = apply_selection(state, keep, spec)
    channels = [int(k.numel()) for k in keep]
    description = f"{base}, network slimming {ratio:g}" + (
        f", channels aligned to {n}" if n > 1 else "") + f" (from {source.name})"
    prune_table = dict(ratio=float(ratio), align=n, source=str(source.resolve()),
                       threshold=threshold)
    new_spec = base_spec.replace(name=name, channels=channels, description=description,
                                 base=base, checkpoint=str(ckpt_path.resolve()), prune=prune_table,
                                 source=str(toml_path))
    load_state(NIN(new_spec), new_state, f"pruned {name}")  # self-check of the copy

    toml_path.parent.mkdir(parents=True, exist_ok=True)
    _save_atomic(ckpt_path, lambda tmp: torch.save({"cfg": channels, "state_dict": new_state}, tmp))
    text = _variant_text(name, description, base, channels, ckpt_path.name, prune_table)
    _save_atomic(toml_path, lambda tmp: tmp.write_text(text))   # last: it registers the variant
    return PruneResult(
        name=name, base=base, ratio=float(ratio), align=n, threshold=threshold,
        channels_before=list(spec.channels), channels=channels,
        keep=[k.tolist() for k in keep],
        params_before=spec.params, params_after=new_spec.params,
        macs_before=spec.macs, macs_after=new_spec.macs,
        source=source, checkpoint_path=ckpt_path, variant_path=toml_path, spec=new_spec)
