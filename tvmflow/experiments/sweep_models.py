"""Planning the alignment sweep of a PyTorch model (:func:`plan_model_sweep`): the model is
pruned at one ratio by Torch-Pruning once per alignment N (N as ``round_to``), each result
saved as ``<model>-p<R>[-a<N>]`` (.pt2 + variant file, the names ``tvmflow prune -v`` gives).

A variant of that name that exists already is reused when it is the same pruning (same
model, ratio, N and importance) and is an error otherwise; two alignments that give the same
channels share one variant.  Measuring is :mod:`.sweep`'s, as for NIN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from tvmflow.errors import TvmflowError
from tvmflow.experiments.sweep_plan import AlignedVariant, SweepPlan, parse_aligns, plan_sweep
from tvmflow.spec.sources import SourceVariant


def plan(source: str | Path, aligns, *, base: str | None = None, name: str | None = None,
         models_dir: str | Path | None = None, write: bool = True, ratio: float | None = None,
         importance: str = "magnitude", say: Callable[[str], None] | None = None) -> SweepPlan:
    """The sweep's variants: of a pruned NIN variant or checkpoint (regular pruning of its
    channels to each N, :func:`~.sweep_plan.plan_sweep`), or of a torchvision / entry-point
    model, pruned at ``ratio`` by Torch-Pruning once per N (:func:`plan_model_sweep`)."""
    from tvmflow.spec.registry import model_dirs
    model = _named_model(source)
    if model is None:
        if ratio is not None:
            raise TvmflowError(f"--ratio prunes a PyTorch model; {str(source)!r} is a NIN "
                               "variant, swept from the channels it was pruned to",
                               hint="drop --ratio (make a NIN variant at a ratio with tvmflow "
                                    "prune)")
        return plan_sweep(source, aligns, base=base, name=name, models_dir=models_dir,
                          write=write)
    if base is not None:
        raise TvmflowError(f"--base names the unpruned NIN variant; {model.name!r} is pruned "
                           "from itself")
    return plan_model_sweep(model, parse_aligns(aligns), ratio=ratio, importance=importance,
                            name=name, write=write, say=say,
                            models_dir=Path(models_dir) if models_dir else model_dirs()[0])


def _named_model(source: str | Path) -> SourceVariant | None:
    """The model variant ``source`` names; None for a NIN variant or a checkpoint file."""
    from tvmflow.spec.registry import get_spec
    path = Path(str(source))
    if path.suffix in (".pth", ".pt", ".tar") or path.is_file():
        return None
    spec = get_spec(str(source))                    # unknown names: suggestions
    return spec if isinstance(spec, SourceVariant) else None


def conv_channels(spec: SourceVariant) -> list[int]:
    """Output channels of the model's convs, in forward order."""
    return [int(r["cout"]) for r in spec.layers() if r["kind"] == "conv"]


def _same_pruning(existing, src: SourceVariant, want: dict) -> bool:
    return (isinstance(existing, SourceVariant) and existing.base == src.name
            and tuple(existing.input_shape) == tuple(src.input_shape)
            and all(existing.prune.get(k) == v for k, v in want.items()))


def plan_model_sweep(src: SourceVariant, aligns: list[int], *, ratio: float | None,
                     importance: str = "magnitude", name: str | None = None,
                     models_dir: Path, write: bool = True, seed: int = 0,
                     say: Callable[[str], None] | None = None) -> SweepPlan:
    """The pruned variants of ``src`` at ``ratio``, one per alignment in ``aligns``."""
    from tvmflow.spec.prune import check_ratio_align, output_paths
    from tvmflow.spec.registry import get_spec, list_models
    from tvmflow.spec.tp_prune import (MARK, check_importance, check_prunable, default_name,
                                       prune_module, prune_settings, save_pruned)
    if ratio is None:
        raise TvmflowError(f"a sweep of {src.name!r} prunes it once per alignment: give the "
                           "pruning ratio", hint=f"tvmflow sweep --from {src.name} --ratio 0.5")
    check_ratio_align(ratio, None)
    check_importance(importance)
    check_prunable(src, src.name)
    prefix = name or default_name(src.name, ratio, 1)
    known = set(list_models())
    variants: list[AlignedVariant] = []
    for n in aligns:
        vname = prefix if n == 1 else f"{prefix}-a{n}"
        want = prune_settings(ratio, n, importance, seed)
        if vname in known:
            existing = get_spec(vname)
            if not _same_pruning(existing, src, want):
                raise TvmflowError(f"variant {vname!r} already exists ({existing.source}) and is "
                                   f"not {src.name} pruned {ratio:g} at align {n} ({importance})",
                                   hint="pass --name to sweep under another name")
            variants.append(AlignedVariant(n, vname, conv_channels(existing), existing,
                                           reused="existing"))
            continue
        if say:
            say(f"pruning {src.name} at {ratio:g} with Torch-Pruning, round_to {n}")
        model, example, convs = prune_module(src, ratio, n, importance, seed)
        channels = [c["after"] for c in convs]          # the module's convs, in order
        earlier = next((v for v in variants if v.reused is None and v.channels == channels),
                       None)
        if earlier is not None:          # this N changed nothing another N had not
            variants.append(AlignedVariant(n, earlier.name, channels, earlier.spec,
                                           reused="sweep"))
            continue
        if write:
            toml_path, pt2_path = output_paths(vname, models_dir, False, ".pt2", header=MARK)
            spec = save_pruned(src, model, example, name=vname, ratio=ratio, align=n,
                               importance=importance, seed=seed, toml_path=toml_path,
                               pt2_path=pt2_path)
            known.add(vname)
        else:
            spec, toml_path = src.replace(name=vname, base=src.name, prune=want, source=None), None
        variants.append(AlignedVariant(n, vname, channels, spec,
                                       path=str(toml_path) if toml_path else None))
    return SweepPlan(src, src, variants, models_dir)
