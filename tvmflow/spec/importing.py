"""``tvmflow import``: register an ONNX file, a saved torch.export program, an entry point or a
torchvision architecture as a variant (a variant file in the workspace's ``models/``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tvmflow.errors import TvmflowError
from tvmflow.files import write_atomic
from tvmflow.spec.prune import toml_value
from tvmflow.spec.registry import declared_by
from tvmflow.spec.sources import SourceVariant, build_source_spec, parse_shape
from tvmflow.workspace import Workspace, check_writable

MARK = "# written by tvmflow import"
TORCHVISION_SHAPE = (1, 3, 224, 224)


@dataclass
class ImportResult:
    spec: SourceVariant
    path: Path

    def to_json(self) -> dict[str, Any]:
        return {"variant": self.spec.name, "path": str(self.path), **self.spec.summary()}


def model_ref(what: str) -> str:
    """``what`` as a model reference: a path ending .onnx / .pt2, or ``torchvision:NAME`` /
    ``entry:pkg.mod:fn`` as given."""
    if what.startswith(("torchvision:", "entry:", "onnx:", "pt2:")):
        return what
    path = Path(what).expanduser()
    suffix = path.suffix.lower()
    if suffix not in (".onnx", ".pt2"):
        raise TvmflowError(f"cannot tell what {what!r} is: give an .onnx or .pt2 file, or "
                           "torchvision:NAME or entry:package.module:function")
    if not path.is_file():
        raise TvmflowError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    return f"{suffix[1:]}:{path.resolve()}"


def _declared_shape(ref: str, given: tuple[int, ...] | None) -> tuple[tuple[int, ...], str]:
    scheme, target = ref.split(":", 1)
    if scheme == "onnx":
        from tvmflow.spec.onnx_info import input_shape
        return input_shape(Path(target), given)[:2]
    if scheme == "pt2":
        return _program_shape(target, given), "float32"
    if given is None:
        if scheme == "torchvision":
            return TORCHVISION_SHAPE, "float32"
        raise TvmflowError(f"an entry point declares no input shape: pass --input-shape, "
                           "e.g. --input-shape 1,3,224,224")
    return given, "float32"


def _program_shape(path: str, given: tuple[int, ...] | None) -> tuple[int, ...]:
    import torch
    try:
        ep = torch.export.load(path)
    except Exception as exc:
        raise TvmflowError(f"cannot load {path} as a saved torch.export program: "
                           f"{type(exc).__name__}: {exc}") from None
    user = [n for n in ep.graph.nodes if n.op == "placeholder"
            and n.name in ep.graph_signature.user_inputs]
    if len(user) != 1:
        raise TvmflowError(f"the program {path} takes {len(user)} inputs; tvmflow takes one")
    shape = tuple(int(d) for d in user[0].meta["val"].shape)
    if given is not None and tuple(given) != shape:
        raise TvmflowError(f"the program {path} was exported for input shape {list(shape)}, "
                           f"not {list(given)} (a saved program's shape is fixed)")
    return shape


def variant_text(spec: SourceVariant, mark: str = MARK) -> str:
    lines = [mark, f"name = {toml_value(spec.name)}"]
    if spec.description:
        lines.append(f"description = {toml_value(spec.description)}")
    if spec.base:
        lines.append(f"base = {toml_value(spec.base)}")
    lines += [f"model = {toml_value(spec.model)}",
              f"input_shape = {toml_value(list(spec.input_shape))}",
              f"input_dtype = {toml_value(spec.input_dtype)}"]
    if spec.kwargs:
        lines.append(f"kwargs = {toml_value(spec.kwargs)}")
    if spec.checkpoint:
        lines.append(f"checkpoint = {toml_value(spec.checkpoint)}")
    if spec.prune:
        lines.append(f"prune = {toml_value(spec.prune)}")
    return "\n".join(lines) + "\n"


def import_variant(what: str, name: str, *, input_shape: str | tuple[int, ...] | None = None,
                   kwargs: dict[str, Any] | None = None, description: str = "",
                   out_dir: str | Path | None = None, force: bool = False) -> ImportResult:
    """Write ``<out_dir>/<name>.toml`` for ``what`` (see :func:`model_ref`), checked first: the
    model builds, takes the input shape, and (ONNX) has no dynamic dim left unset."""
    ref = model_ref(what)
    given = parse_shape(input_shape, "--input-shape") if input_shape is not None else None
    shape, dtype = _declared_shape(ref, given)
    out = Path(out_dir) if out_dir is not None else Workspace.current().models
    path = out / f"{name}.toml"
    spec = build_source_spec(dict(name=name, model=ref, input_shape=list(shape),
                                  input_dtype=dtype, kwargs=dict(kwargs or {}),
                                  description=description or f"imported from {what}",
                                  source=str(path)),
                             where="tvmflow import")
    check_writable(out)
    _check_free(name, path, force)
    spec.layers()      # builds the model once at the shape (clear errors), kept for its counts
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(path, variant_text(spec).encode())
    return ImportResult(spec, path)


def _check_free(name: str, path: Path, force: bool) -> None:
    others = [p for p in declared_by(name) if p.resolve() != path.resolve()]
    if others:
        raise TvmflowError(f"variant {name!r} already exists ({others[0]})",
                           hint="choose another --name")
    if path.exists():
        if not force:
            raise TvmflowError(f"{path} already exists", hint="pass --force to replace what "
                               "an earlier import wrote, or choose another --name")
        if not path.read_text(errors="replace").startswith(MARK):
            raise TvmflowError(f"{path} was not written by tvmflow import (--force replaces "
                               "only what import wrote)", hint="choose another --name")
