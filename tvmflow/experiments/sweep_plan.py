"""Planning an alignment sweep (:func:`plan_sweep`): the variants micronet's regular pruning
would give a pruned model for each alignment N, reused where one exists, else written as a
variant file (``base`` + ``channels``, no checkpoint: latency does not depend on the
weights, so it gets seeded random weights).  Measuring them is :mod:`.sweep`'s.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from tvmflow.errors import TvmflowError
from tvmflow.spec.prune import align_channels
from tvmflow.spec.registry import VariantSpec, get_spec, list_models, model_dirs

DEFAULT_ALIGNS = (1, 2, 4, 8, 16, 32)


def aligned_channels(channels, widths, n: int) -> list[int]:
    """Regular pruning of every layer to multiples of ``n``, capped at the base widths."""
    if len(channels) != len(widths):
        raise TvmflowError(f"{len(channels)} channel counts for {len(widths)} base layers")
    return [align_channels(int(c), int(w), n) for c, w in zip(channels, widths)]


def parse_aligns(text: str | list[int] | tuple[int, ...]) -> list[int]:
    """``"1,2,4,8"`` -> ``[1, 2, 4, 8]`` (validated, duplicates dropped, order kept)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[int] = []
    for item in items:
        item = str(item).strip()
        if not item:
            continue
        if not item.isdigit() or int(item) < 1:
            raise TvmflowError(f"bad alignment {item!r}: expected positive integers like 1,2,4,8")
        if int(item) not in out:
            out.append(int(item))
    if not out:
        raise TvmflowError("no alignment given (e.g. --align 1,2,4,8,16,32)")
    return out


@dataclass
class AlignedVariant:
    align: int
    name: str
    channels: list[int]
    spec: VariantSpec = field(repr=False)
    reused: str | None = None      # "source", "existing" or "sweep" when no file was written
    path: str | None = None        # the variant file written (new variants)


@dataclass
class SweepPlan:
    source: VariantSpec
    base: VariantSpec
    variants: list[AlignedVariant]
    models_dir: Path

    def unique(self) -> list[AlignedVariant]:
        seen: dict[str, AlignedVariant] = {}
        for v in self.variants:
            seen.setdefault(v.name, v)
        return list(seen.values())


def _same_geometry(a: VariantSpec, b: VariantSpec) -> bool:
    keys = ("channels", "kernels", "groups", "shuffle", "pool1", "pool2", "num_classes",
            "in_channels", "image_size")
    return all(getattr(a, k) == getattr(b, k) for k in keys)


def _toml_list(values) -> str:
    return "[" + ", ".join(str(int(v)) for v in values) + "]"


def _variant_text(name: str, base: str, source: VariantSpec, channels: list[int], n: int) -> str:
    return "\n".join([
        f"# Written by `tvmflow sweep`: {source.name} with regular pruning to multiples of {n}.",
        f"name = {json.dumps(name)}",
        f"description = {json.dumps(f'{source.name}, channels aligned to {n}')}",
        f"base = {json.dumps(base)}",
        f"channels = {_toml_list(channels)}",
        "",
        "[prune]",
        f"align = {n}",
        f"from = {json.dumps(source.name)}",
        ""])


def _source_spec(source: str | Path, base: str | None, name: str | None) -> tuple[VariantSpec, bool]:
    """(spec of the source, whether it has to be written as a variant file)."""
    text = str(source)
    path = Path(text)
    looks_like_file = path.suffix in (".pth", ".pt", ".tar") or path.is_file()
    if not looks_like_file:
        spec = get_spec(text)
        if name is not None and isinstance(spec, VariantSpec):
            raise TvmflowError(f"--name names the variant made from a --from checkpoint; "
                               f"{text!r} is a variant already")
        return spec, False
    if not path.is_file():
        raise TvmflowError(f"checkpoint {path} does not exist")
    from tvmflow.spec.nin import NIN, load_checkpoint_file, load_state
    loaded = load_checkpoint_file(path)
    base_spec = get_spec(base or "original")
    if loaded.get("cfg") is None:
        raise TvmflowError(f"checkpoint {path} has no 'cfg' (its channel list)",
                           hint="pass a micronet {'cfg', 'state_dict'} checkpoint or a variant name")
    try:
        channels = [int(c) for c in loaded["cfg"]]
        name = name or re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem)
        spec = base_spec.replace(name=name, channels=channels, base=base_spec.name,
                                 checkpoint=str(path.resolve()), description=f"pruned checkpoint {path.name}",
                                 source=None)
    except (TypeError, ValueError, TvmflowError) as exc:
        reason = exc.message if isinstance(exc, TvmflowError) else str(exc)
        raise TvmflowError(f"checkpoint {path}: its cfg does not fit {base_spec.name!r}: {reason}") from None
    load_state(NIN(spec), loaded["state_dict"], f"checkpoint {path}")
    return spec, True


def plan_sweep(source: str | Path, aligns, *, base: str | None = None, name: str | None = None,
               models_dir: str | Path | None = None, write: bool = True) -> SweepPlan:
    """The aligned variants of ``source``, a pruned NIN variant or checkpoint: regular pruning
    of its channels to each N.  (A PyTorch model is pruned per N instead:
    :func:`tvmflow.experiments.sweep_models.plan` takes either.)

    New variants are written to ``models_dir`` (default: the first ``TVMFLOW_MODEL_PATH``
    directory, else the workspace's ``models/``); an existing variant of the same name is
    reused when it has the same channels and is an error otherwise (nothing is overwritten).
    """
    aligns = parse_aligns(aligns)
    src, write_source = _source_spec(source, base, name)
    if not isinstance(src, VariantSpec):
        raise TvmflowError(f"{src.name!r} is a model of its own ({src.scheme}), not a NIN variant",
                           hint=f"sweep it with a pruning ratio: tvmflow sweep --from {src.name} "
                                "--ratio 0.5")
    base_name = base or src.base
    if not base_name:
        raise TvmflowError(f"variant {src.name!r} names no base (unpruned) variant",
                           hint="pass --base, e.g. --base original")
    base_spec = get_spec(base_name)
    if (base_spec.kernels, base_spec.groups, base_spec.shuffle) != (src.kernels, src.groups, src.shuffle):
        raise TvmflowError(f"{src.name!r} does not have the layer structure of its base {base_name!r}")
    over = [i for i, (c, w) in enumerate(zip(src.channels, base_spec.channels)) if c > w]
    if over:
        raise TvmflowError(f"{src.name!r} has more channels than its base {base_name!r} in "
                           f"layer(s) {over}; is --base right?")
    models_dir = Path(models_dir) if models_dir else model_dirs()[0]
    known = set(list_models())
    written: list[tuple[Path, str]] = []
    if write_source:
        written.append(_register(src, models_dir, known, text=None))
    variants: list[AlignedVariant] = []
    for n in aligns:
        channels = aligned_channels(src.channels, base_spec.channels, n)
        vname = f"{src.name}-a{n}"
        spec = src.replace(name=vname, channels=channels, base=base_name, checkpoint=None,
                           description=f"{src.name}, channels aligned to {n}",
                           prune={"align": n, "from": src.name}, source=None)
        if channels == list(src.channels):
            variants.append(AlignedVariant(n, src.name, channels, src, reused="source"))
            continue
        earlier = next((v for v in variants if v.channels == channels), None)
        if earlier is not None:
            variants.append(AlignedVariant(n, earlier.name, channels, earlier.spec, reused="sweep"))
            continue
        if vname in known:
            existing = get_spec(vname)
            if not _same_geometry(existing, spec):
                raise TvmflowError(f"variant {vname!r} already exists ({existing.source}) with "
                                   f"channels {list(existing.channels)}, not {channels}",
                                   hint="pass --name to sweep under another name")
            variants.append(AlignedVariant(n, vname, channels, existing, reused="existing"))
            continue
        text = _variant_text(vname, base_name, src, channels, n)
        path = models_dir / f"{vname}.toml"
        if write:
            written.append(_register(spec, models_dir, known, text=text))
        variants.append(AlignedVariant(n, vname, channels, spec, path=str(path)))
    return SweepPlan(src, base_spec, variants, models_dir)


def _register(spec: VariantSpec, models_dir: Path, known: set[str], text: str | None) -> tuple[Path, str]:
    path = models_dir / f"{spec.name}.toml"
    if text is None:  # the source checkpoint itself
        if spec.name in known:
            existing = get_spec(spec.name)
            if not _same_geometry(existing, spec):
                raise TvmflowError(f"variant {spec.name!r} already exists ({existing.source})",
                                   hint="pass --name to register the checkpoint under another name")
            return path, spec.name
        text = "\n".join([
            "# Written by `tvmflow sweep`: a pruned checkpoint as a variant.",
            f"name = {json.dumps(spec.name)}",
            f"description = {json.dumps(spec.description)}",
            f"base = {json.dumps(spec.base)}",
            f"channels = {_toml_list(spec.channels)}",
            f"checkpoint = {json.dumps(spec.checkpoint)}", ""])
    if path.exists():
        raise TvmflowError(f"{path} already exists and is not the variant {spec.name!r}",
                           hint="remove it or pass --models-dir")
    models_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    known.add(spec.name)
    return path, spec.name

