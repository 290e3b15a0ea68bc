"""Variants whose model comes from elsewhere: an ONNX file, a saved ``torch.export`` program,
a Python entry point, or a torchvision architecture.

A variant file names the source instead of NIN layer settings, and declares the input:

    name = "resnet18"
    model = "torchvision:resnet18"        # or "onnx:net.onnx", "pt2:net.pt2",
                                          #    "entry:mypkg.models:build"
    input_shape = [1, 3, 224, 224]
    input_dtype = "float32"
    kwargs = { num_classes = 10 }         # torchvision and entry points only

Relative paths are relative to the variant file.  torchvision and entry-point models have no
weights of their own: they get tvmflow's seeded random weights (BN statistics included), or a
``checkpoint`` (a state_dict file).  ONNX and .pt2 files carry their weights.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from tvmflow.errors import TvmflowError
from tvmflow.spec.record import SpecRecord

SCHEMES = ("onnx", "pt2", "entry", "torchvision")
DTYPES = ("float32",)
TORCH_SCHEMES = ("pt2", "entry", "torchvision")


@dataclass(frozen=True)
class SourceVariant(SpecRecord):
    """A model from a file, an entry point or torchvision: the spec stage's record for it."""

    name: str
    model: str                              # "<scheme>:<ref>", a path made absolute
    input_shape: tuple[int, ...]
    input_dtype: str = "float32"
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    base: str | None = None
    checkpoint: str | None = None           # a state_dict for torchvision / entry models
    prune: dict[str, Any] = field(default_factory=dict)
    source: str | None = None               # the variant file

    @property
    def scheme(self) -> str:
        return self.model.split(":", 1)[0]

    @property
    def ref(self) -> str:
        return self.model.split(":", 1)[1]

    @property
    def is_torch(self) -> bool:
        return self.scheme in TORCH_SCHEMES

    # ---- derived facts (the model is built once per record) ------------------------------
    @cached_property
    def _layers(self) -> tuple[dict[str, Any], ...]:
        from tvmflow.spec.geometry import conv_layers
        return tuple(conv_layers(self))

    def layers(self) -> list[dict[str, Any]]:
        """Per conv and linear layer: name, cin, cout, kernel, groups, out_hw, macs, params."""
        return [dict(r) for r in self._layers]

    @property
    def macs(self) -> int:
        return sum(r["macs"] for r in self._layers)

    @property
    def params(self) -> int:
        return sum(r["params"] for r in self._layers)

    def cfg(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["input_shape"] = list(self.input_shape)
        data.pop("source")
        return data

    def summary(self) -> dict[str, Any]:
        return dict(name=self.name, description=self.description, model=self.model,
                    params=self.params, macs=self.macs, input_shape=list(self.input_shape),
                    input_dtype=self.input_dtype, source=self.source)

    @staticmethod
    def _build(data: dict[str, Any], where: str) -> "SourceVariant":
        return build_source_spec(data, where)


# ---- parsing ----------------------------------------------------------------------------------

def parse_shape(value: Any, where: str) -> tuple[int, ...]:
    """An input shape from a list or a string like ``1,3,224,224`` (every dim >= 1)."""
    if isinstance(value, str):
        try:
            value = [int(v) for v in re.split(r"[,x]", value.strip())]
        except ValueError:
            raise TvmflowError(f"{where}: input shape {value!r} is not a list of whole numbers "
                               "like 1,3,224,224") from None
    if (not isinstance(value, (list, tuple)) or not value
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)):
        raise TvmflowError(f"{where}: input shape must be whole numbers >= 1, like "
                           f"[1, 3, 224, 224], got {value!r}")
    return tuple(int(v) for v in value)


def resolve_model_ref(model: Any, base_dir: Path | None, where: str) -> str:
    """``scheme:ref`` checked, with a file path made absolute (relative to ``base_dir``)."""
    if not isinstance(model, str) or ":" not in model:
        raise TvmflowError(f"{where}: field 'model' must be '<scheme>:<ref>' with a scheme of "
                           f"{', '.join(SCHEMES)}, got {model!r}")
    scheme, ref = model.split(":", 1)
    if scheme not in SCHEMES:
        raise TvmflowError(f"{where}: unknown model scheme {scheme!r} in {model!r}; "
                           f"known: {', '.join(SCHEMES)}")
    if not ref:
        raise TvmflowError(f"{where}: field 'model' names no {scheme} model: {model!r}")
    if scheme in ("onnx", "pt2"):
        path = Path(ref).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        ref = str(path.resolve())
    elif scheme == "entry" and (ref.count(":") != 1 or not all(ref.split(":"))):
        raise TvmflowError(f"{where}: entry point {ref!r} must be 'package.module:function'")
    return f"{scheme}:{ref}"


def build_source_spec(data: dict[str, Any], where: str) -> SourceVariant:
    known = {f.name for f in dataclasses.fields(SourceVariant)}
    unknown = set(data) - known
    if unknown:
        raise TvmflowError(f"{where}: unknown field(s) {sorted(unknown)} for a variant with a "
                           f"'model'; known fields are {sorted(known - {'source'})}")
    name = data.get("name")
    if not isinstance(name, str) or not name or any(c.isspace() or c in "/\\" for c in name):
        raise TvmflowError(f"{where}: field 'name' must be a non-empty word, got {name!r}")
    if data.get("input_shape") is None:
        raise TvmflowError(f"{where}: missing field 'input_shape' (like [1, 3, 224, 224])")
    dtype = data.get("input_dtype", "float32")
    if dtype not in DTYPES:
        raise TvmflowError(f"{where}: input_dtype {dtype!r} is not supported; "
                           f"use one of {', '.join(DTYPES)}")
    kwargs = data.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise TvmflowError(f"{where}: field 'kwargs' must be a table of keyword arguments")
    model = resolve_model_ref(data.get("model"), None, where)
    if kwargs and model.split(":", 1)[0] not in ("entry", "torchvision"):
        raise TvmflowError(f"{where}: 'kwargs' apply to entry-point and torchvision models only")
    if data.get("checkpoint") and model.split(":", 1)[0] not in ("entry", "torchvision"):
        raise TvmflowError(f"{where}: an ONNX or .pt2 model carries its weights; "
                           "'checkpoint' applies to entry-point and torchvision models only")
    return SourceVariant(name=name, model=model,
                         input_shape=parse_shape(data["input_shape"], where),
                         input_dtype=dtype, kwargs=dict(kwargs),
                         description=str(data.get("description", "")), base=data.get("base"),
                         checkpoint=data.get("checkpoint"), prune=dict(data.get("prune") or {}),
                         source=data.get("source"))


def spec_from_file_data(data: dict[str, Any], path: Path) -> SourceVariant:
    """A variant file's data (with 'model') into a record; relative paths against the file."""
    merged = dict(data)
    where = f"variant file {path}"
    merged["model"] = resolve_model_ref(data.get("model"), path.parent, where)
    checkpoint = merged.get("checkpoint")
    if checkpoint and not os.path.isabs(checkpoint):
        merged["checkpoint"] = str((path.parent / checkpoint).resolve())
    merged["source"] = str(path)
    return build_source_spec(merged, where)
