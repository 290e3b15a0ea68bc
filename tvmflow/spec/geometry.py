"""Conv and linear layers of a source variant with their geometry (channels, kernel, groups,
output size, MACs, params): from a forward pass, a saved program's graph, or ONNX shape
inference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tvmflow.spec.torch_models import check_input_shape, load_program, torch_module

def conv_layers(spec: SourceVariant) -> list[dict[str, Any]]:
    if spec.scheme == "onnx":
        from tvmflow.spec.onnx_info import onnx_layers
        return onnx_layers(Path(spec.ref), spec.input_shape, spec.name)
    return torch_layers(torch_module(spec), spec)


def torch_layers(model, spec: SourceVariant) -> list[dict[str, Any]]:
    """Conv2d and Linear layers met in one forward pass at the declared input shape."""
    import torch
    import torch.nn as nn
    rows: list[dict[str, Any]] = []
    hooks = []

    def hook(name):
        def record(mod, _inp, out):
            if isinstance(mod, nn.Conv2d):
                k = mod.kernel_size[0] * mod.kernel_size[1]
                hw = int(out.shape[-2]) * int(out.shape[-1])
                rows.append(dict(name=name, kind="conv", cin=mod.in_channels,
                                 cout=mod.out_channels, kernel=mod.kernel_size[0],
                                 groups=mod.groups, out_hw=int(out.shape[-1]),
                                 macs=hw * mod.out_channels * (mod.in_channels // mod.groups) * k,
                                 params=sum(p.numel() for p in mod.parameters(recurse=False))))
            else:
                rows.append(dict(name=name, kind="linear", cin=mod.in_features,
                                 cout=mod.out_features, kernel=1, groups=1, out_hw=1,
                                 macs=mod.in_features * mod.out_features,
                                 params=sum(p.numel() for p in mod.parameters(recurse=False))))
        return record

    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            hooks.append(mod.register_forward_hook(hook(name)))
    try:
        if spec.scheme == "pt2":      # a saved program's module: no submodules to hook
            return program_layers(spec)
        check_input_shape(spec, model)
    finally:
        for h in hooks:
            h.remove()
    return rows


def program_layers(spec: SourceVariant) -> list[dict[str, Any]]:
    """Conv and linear layers of a saved torch.export program, from its graph."""
    ep = load_program(spec)
    params = {**dict(ep.named_parameters()), **dict(ep.named_buffers())}
    sig = ep.graph_signature
    by_input = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
    rows = []
    for node in ep.graph.nodes:
        if node.op != "call_function":
            continue
        target = str(node.target)
        if not (target.startswith("aten.conv2d") or target.startswith("aten.convolution")
                or target.startswith("aten.linear")):
            continue
        w_node = node.args[1]
        weight = params.get(by_input.get(getattr(w_node, "name", ""), ""))
        out = node.meta.get("val")
        if weight is None or out is None:
            continue
        bias = node.args[2] if len(node.args) > 2 else None
        nparams = weight.numel() + (int(weight.shape[0]) if bias is not None else 0)
        if target.startswith("aten.linear"):
            rows.append(dict(name=node.name, kind="linear", cin=int(weight.shape[1]),
                             cout=int(weight.shape[0]), kernel=1, groups=1, out_hw=1,
                             macs=int(weight.numel()), params=nparams))
            continue
        groups = int(node.args[6] if target.startswith("aten.conv2d") and len(node.args) > 6
                     else node.args[8] if len(node.args) > 8 else 1)
        cout, cin_g, kh, kw = (int(d) for d in weight.shape)
        hw = int(out.shape[-2]) * int(out.shape[-1])
        rows.append(dict(name=node.name, kind="conv", cin=cin_g * groups, cout=cout, kernel=kh,
                         groups=groups, out_hw=int(out.shape[-1]),
                         macs=hw * cout * cin_g * kh * kw, params=nparams))
    return rows
