"""PyTorch / ONNX -> Relax IRModule.

Both paths embed the weights as constants, so ``main`` takes only the image and a compiled
module is one self-contained file; with constant weights, MetaSchedule's layout rewrite can
also pre-pack them at compile time.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from tvmflow.errors import TvmflowError


def from_torch(model, example):
    """torch.export the (eval-mode) model and import it with ``from_exported_program``."""
    import torch
    from tvm.relax.frontend.torch import from_exported_program
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(model.eval(), (example,))
        return from_exported_program(exported, keep_params_as_input=False)


def export_onnx(model, example, path: Path, input_name: str = "input") -> Path:
    import torch
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (example,), str(path), input_names=[input_name],
                          output_names=["logits"], opset_version=17, dynamo=False)
    return Path(path)


def from_onnx(path: Path, input_name: str, shape: tuple[int, ...]):
    import onnx
    from tvm.relax.frontend.onnx import from_onnx as _from_onnx
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # protobuf decode errors
        raise TvmflowError(f"cannot read ONNX file {path}: {exc}") from None
    names = [i.name for i in proto.graph.input]
    if input_name not in names:
        raise TvmflowError(f"ONNX file {path} has no input {input_name!r} (inputs: {names})")
    return _from_onnx(proto, shape_dict={input_name: list(shape)}, keep_params_in_input=False)


def main_input(mod) -> tuple[str, tuple[int, ...], str]:
    """(name, shape, dtype) of ``main``'s only input."""
    param = mod["main"].params[0]
    ty = param.ty  # TVM 0.27 names it `ty` (was struct_info) and the name `name` (was name_hint)
    return str(param.name), tuple(int(d) for d in ty.shape), str(ty.dtype)
