"""Pruning any PyTorch model with Torch-Pruning (DepGraph): ``tvmflow prune -v resnet18``.

The channels of every coupled group of layers are ranked by an importance (L2 magnitude of
the weights, or the |gamma| of the BatchNorm that follows), the lowest ``ratio`` of them are
removed, and with ``align`` N the kept counts are rounded to multiples of N (Torch-Pruning's
``round_to``).  The layer that produces the model's output (the classifier) is never pruned.
The result is saved as a torch.export program (``<name>.pt2``) beside a variant file that
names it, its base and how it was pruned.  NIN variants keep their own network-slimming rule
(:mod:`tvmflow.spec.prune`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tvmflow.errors import TvmflowError
from tvmflow.files import atomic_path, write_atomic
from tvmflow.spec.sources import SourceVariant

IMPORTANCES = ("magnitude", "bn-scale")
MARK = "# written by tvmflow prune (Torch-Pruning)"


@dataclass
class ModelPruneResult:
    name: str
    base: str
    ratio: float
    align: int
    importance: str
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    program_path: Path
    variant_path: Path
    convs: list[dict[str, Any]] = field(default_factory=list)   # name, cout before/after

    def to_json(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def default_name(base: str, ratio: float, align: int) -> str:
    return f"{base}-p{round(ratio * 100):02d}" + (f"-a{align}" if align > 1 else "")


def output_layer(model, example) -> Any:
    """The last Conv2d / Linear, in forward order, whose output width is the model's."""
    import torch
    import torch.nn as nn
    order: list[Any] = []
    hooks = [m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            out = model(example)
    finally:
        for h in hooks:
            h.remove()
    width = int(out.shape[1])
    for mod in reversed(order):
        if getattr(mod, "out_features", getattr(mod, "out_channels", None)) == width:
            return mod
    return None


def _importance(kind: str):
    import torch_pruning as tp
    if kind == "magnitude":
        return tp.importance.MagnitudeImportance(p=2)
    return tp.importance.BNScaleImportance()


def prune_module(spec: SourceVariant, ratio: float, align: int, importance: str, seed: int):
    """The pruned eval-mode module, and per conv (name, cout before, after)."""
    import torch
    import torch.nn as nn
    import torch_pruning as tp
    from tvmflow.spec import torch_models as sources
    model = sources.torch_module(spec, seed)
    example = sources.example_input(spec, seed)
    before = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    head = output_layer(model, example)
    try:
        pruner = tp.pruner.MetaPruner(model, example, importance=_importance(importance),
                                      pruning_ratio=ratio, ignored_layers=[head] if head else [],
                                      round_to=align if align > 1 else None)
        pruner.step()
    except Exception as exc:
        raise TvmflowError(f"Torch-Pruning could not prune {spec.name!r}: "
                           f"{type(exc).__name__}: {exc}") from None
    convs = [dict(name=n, before=before[n], after=m.out_channels)
             for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model.eval()(example)          # still runs
    return model.eval(), example, convs


def check_prunable(spec, variant: str) -> None:
    """Torch-Pruning needs the module: a torchvision or entry-point variant."""
    if not isinstance(spec, SourceVariant) or spec.scheme not in ("torchvision", "entry"):
        kind = ("a NIN variant" if not isinstance(spec, SourceVariant)
                else {"onnx": "an ONNX model", "pt2": "a saved program (.pt2)"}[spec.scheme])
        raise TvmflowError(f"variant {variant!r} is {kind}; Torch-Pruning prunes torchvision "
                           "and entry-point models",
                           hint="prune a NIN checkpoint with tvmflow prune CHECKPOINT --ratio R")


def check_importance(importance: str) -> None:
    if importance not in IMPORTANCES:
        raise TvmflowError(f"unknown importance {importance!r}; choose {', '.join(IMPORTANCES)}")


def save_pruned(spec: SourceVariant, model, example, *, name: str, ratio: float, align: int,
                importance: str, seed: int, toml_path: Path, pt2_path: Path) -> SourceVariant:
    """Write the pruned module as ``pt2_path`` and its variant file ``toml_path`` (atomically,
    the variant file last); the new variant's record."""
    import torch
    from tvmflow.spec.importing import variant_text
    with torch.no_grad():
        program = torch.export.export(model, (example,))
    with atomic_path(pt2_path) as tmp:
        torch.export.save(program, str(tmp))
    new = SourceVariant(name=name, model=f"pt2:{pt2_path.resolve()}",
                        input_shape=spec.input_shape, input_dtype=spec.input_dtype,
                        description=f"{spec.name} pruned {ratio:g} by Torch-Pruning ({importance})"
                                    + (f", channels rounded to {align}" if align > 1 else ""),
                        base=spec.name, prune=prune_settings(ratio, align, importance, seed),
                        source=str(toml_path))
    write_atomic(toml_path, variant_text(new, mark=MARK).encode())
    return new


def prune_settings(ratio: float, align: int, importance: str, seed: int = 0) -> dict[str, Any]:
    """The ``[prune]`` table of a variant Torch-Pruning made."""
    return dict(ratio=float(ratio), align=align, importance=importance, engine="torch-pruning",
                seed=seed)


def prune_model(variant: str, ratio: float, align: int | None = None, *,
                importance: str = "magnitude", name: str | None = None,
                out_dir: str | Path | None = None, force: bool = False,
                seed: int = 0) -> ModelPruneResult:
    """Prune a PyTorch variant (torchvision or entry point) with Torch-Pruning; write
    ``<name>.pt2`` and ``<name>.toml`` (atomically, the variant file last)."""
    from tvmflow.spec.prune import check_ratio_align, output_paths
    from tvmflow.spec.registry import get_spec
    n = check_ratio_align(ratio, align)
    check_importance(importance)
    spec = get_spec(variant)
    check_prunable(spec, variant)
    name = name or default_name(variant, ratio, n)
    toml_path, pt2_path = output_paths(name, out_dir, force, ".pt2", header=MARK)
    model, example, convs = prune_module(spec, ratio, n, importance, seed)
    new = save_pruned(spec, model, example, name=name, ratio=ratio, align=n,
                      importance=importance, seed=seed, toml_path=toml_path, pt2_path=pt2_path)
    return ModelPruneResult(name=name, base=variant, ratio=float(ratio), align=n,
                            importance=importance, params_before=spec.params,
                            params_after=new.params, macs_before=spec.macs, macs_after=new.macs,
                            program_path=pt2_path, variant_path=toml_path, convs=convs)
