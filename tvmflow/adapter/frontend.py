"""PyTorch / ONNX -> Relax IRModule.

Both paths embed the weights as constants, so ``main`` takes only the image and a compiled
module is one self-contained file; with constant weights, MetaSchedule's layout rewrite can
also pre-pack them at compile time.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from tvmflow.errors import TvmflowError


def from_torch(model, example, variant: str | None = None):
    """torch.export the (eval-mode) model and import it with ``from_exported_program``."""
    import torch
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            exported = torch.export.export(model.eval(), (example,))
        except Exception as exc:
            raise TvmflowError(f"{_who(variant)}torch.export failed: {_first_line(exc)}") from None
    return from_program(exported, example, variant)


def from_program(exported, example=None, variant: str | None = None):
    """A torch.export ExportedProgram into Relax; an operator TVM cannot import is named."""
    from tvm.relax.frontend.torch import from_exported_program
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return from_exported_program(exported, keep_params_as_input=False)
        except AssertionError as exc:
            text = str(exc)
            if "Unsupported function types" in text:
                ops = text.split("Unsupported function types", 1)[1].strip()
                raise TvmflowError(f"{_who(variant)}TVM's PyTorch frontend cannot import "
                                   f"operator(s) {ops}") from None
            raise


def _who(variant: str | None) -> str:
    return f"variant {variant!r}: " if variant else ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def export_onnx(model, example, path: Path, input_name: str = "input") -> Path:
    import torch
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (example,), str(path), input_names=[input_name],
                          output_names=["logits"], opset_version=17, dynamo=False)
    return Path(path)


def from_onnx(path: Path, input_name: str, shape: tuple[int, ...], variant: str | None = None):
    import onnx
    import tvm
    from tvm.relax.frontend.onnx import from_onnx as _from_onnx
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # protobuf decode errors
        raise TvmflowError(f"cannot read ONNX file {path}: {exc}") from None
    names = [i.name for i in proto.graph.input]
    if input_name not in names:
        raise TvmflowError(f"ONNX file {path} has no input {input_name!r} (inputs: {names})")
    try:
        return _from_onnx(proto, shape_dict={input_name: list(shape)}, keep_params_in_input=False)
    except tvm.error.OpNotImplemented as exc:
        ops = str(exc).split("frontend ONNX:", 1)[-1].strip().splitlines()[0]
        raise TvmflowError(f"{_who(variant)}TVM's ONNX frontend cannot import operator(s) "
                           f"{ops} (in {path})") from None


def main_input(mod) -> tuple[str, tuple[int, ...], str]:
    """(name, shape, dtype) of ``main``'s only input."""
    param = mod["main"].params[0]
    ty = param.ty  # TVM 0.27 names it `ty` (was struct_info) and the name `name` (was name_hint)
    return str(param.name), tuple(int(d) for d in ty.shape), str(ty.dtype)
