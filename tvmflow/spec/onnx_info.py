"""What tvmflow reads from an ONNX file without TVM: its input, and its conv/linear layers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tvmflow.errors import TvmflowError


def load(path: Path):
    import onnx
    if not Path(path).is_file():
        raise TvmflowError(f"ONNX file {path} does not exist")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf decode errors
        raise TvmflowError(f"cannot read ONNX file {path}: {type(exc).__name__}: {exc}") from None


def graph_input(proto) -> tuple[str, list[int | str], str]:
    """(name, dims, dtype) of the graph's one real input (initializers excluded); a dim
    without a fixed size is its name (or '?')."""
    import onnx
    weights = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise TvmflowError(f"the ONNX model has {len(inputs)} inputs "
                           f"({', '.join(i.name for i in inputs)}); tvmflow takes one")
    tensor = inputs[0].type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?")
            for d in tensor.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
    return inputs[0].name, dims, dtype


def input_shape(path: Path, given: tuple[int, ...] | None) -> tuple[tuple[int, ...], str, str]:
    """The input shape to import ``path`` at: its own when fixed, else ``given``; the dtype
    and the input's name.  Dynamic dims and no shape given, or a given shape that contradicts a fixed dim,
    are errors."""
    name, dims, dtype = graph_input(load(path))
    if given is None:
        dynamic = [f"dim {i} ({d})" for i, d in enumerate(dims) if isinstance(d, str)]
        if dynamic:
            raise TvmflowError(f"ONNX file {path}: input {name!r} has dynamic "
                               f"{', '.join(dynamic)}; give the shape to use",
                               hint="pass --input-shape, e.g. --input-shape 1,3,224,224")
        return tuple(int(d) for d in dims), dtype, name
    if len(given) != len(dims) or any(isinstance(d, int) and d != g for d, g in zip(dims, given)):
        raise TvmflowError(f"ONNX file {path}: input {name!r} has shape "
                           f"{dims}, which {list(given)} does not fit")
    return tuple(given), dtype, name


def onnx_layers(path: Path, shape: tuple[int, ...], variant: str) -> list[dict[str, Any]]:
    """Conv and Gemm/MatMul layers with their geometry, from ONNX shape inference."""
    import numpy as np
    import onnx
    proto = load(path)
    name, _dims, _dtype = graph_input(proto)
    for inp in proto.graph.input:
        if inp.name == name:
            dims = inp.type.tensor_type.shape.dim
            for d, v in zip(dims, shape):
                d.ClearField("dim_param")
                d.dim_value = int(v)
    try:
        proto = onnx.shape_inference.infer_shapes(proto)
    except Exception as exc:
        raise TvmflowError(f"variant {variant!r}: ONNX shape inference failed on {path}: "
                           f"{exc}") from None
    weights = {i.name: tuple(i.dims) for i in proto.graph.initializer}
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(proto.graph.value_info) + list(proto.graph.output)}
    rows = []
    for node in proto.graph.node:
        if node.op_type == "Conv" and node.input[1] in weights:
            cout, cin_g, kh, kw = weights[node.input[1]]
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            out = shapes.get(node.output[0]) or [0, 0, 0, 0]
            nparams = int(np.prod(weights[node.input[1]])) + (cout if len(node.input) > 2 else 0)
            rows.append(dict(name=node.name or node.output[0], kind="conv", cin=cin_g * group,
                             cout=cout, kernel=kh, groups=group, out_hw=out[-1],
                             macs=out[-2] * out[-1] * cout * cin_g * kh * kw, params=nparams))
        elif node.op_type in ("Gemm", "MatMul") and node.input[1] in weights:
            w = weights[node.input[1]]
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            cout, cin = (w[0], w[1]) if trans_b else (w[1], w[0])
            rows.append(dict(name=node.name or node.output[0], kind="linear", cin=cin,
                             cout=cout, kernel=1, groups=1, out_hw=1, macs=cin * cout,
                             params=cin * cout + (cout if len(node.input) > 2 else 0)))
    return rows
