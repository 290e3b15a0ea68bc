"""Which network layer each kernel of a compiled module computes (``tvmflow profile``).

Every kernel is attributed to the network layer it belongs to, in program order: a kernel
whose name contains ``conv2d`` opens the next conv layer of the spec's ``layers()`` (conv0
... block10, head for NIN; the Conv2d layers in forward order for other models); element-wise / bias / BN kernels belong to the conv before them; layout
transforms to the conv after them; pools get rows of their own (``pool1``, ``pool2``, and the
final global average pool ``avgpool``).
"""

from __future__ import annotations

from tvmflow.measure.profile_result import KernelTime, LayerTime
from tvmflow.spec.registry import VariantSpec

POOL_AFTER = {2: "pool1", 5: "pool2"}  # conv index a pool follows -> its row name
FINAL_POOL = "avgpool"


def assign_layers(kernel_names: list[str], spec: VariantSpec) -> tuple[list[str], str | None]:
    """The layer name of each kernel call (in program order), and a warning if the module's
    conv kernels do not line up with the variant's conv layers."""
    convs = [row["name"] for row in spec.layers() if row.get("kind", "conv") == "conv"]
    labels: list[str | None] = [None] * len(kernel_names)
    conv = -1
    pending: list[int] = []
    n_conv = sum("conv2d" in n for n in kernel_names)
    warning = None
    if n_conv != len(convs):
        warning = (f"the module has {n_conv} conv kernels for {len(convs)} conv layers; "
                   "the layer attribution is approximate")
    for i, name in enumerate(kernel_names):
        if "conv2d" in name:
            conv = min(conv + 1, len(convs) - 1)
            for j in pending:
                labels[j] = convs[conv]
            pending = []
            labels[i] = convs[conv]
        elif "pool" in name:
            labels[i] = FINAL_POOL if conv >= len(convs) - 1 else POOL_AFTER.get(conv, f"pool@{conv}")
        elif "layout_transform" in name or conv < 0:
            pending.append(i)
        else:
            labels[i] = convs[conv]
    for j in pending:  # trailing transforms: the last layer's output
        labels[j] = convs[max(conv, 0)]
    return [str(label) for label in labels], warning


def layer_rows(spec: VariantSpec, kernels: list[KernelTime]) -> list[LayerTime]:
    geometry = {row["name"]: row for row in spec.layers()}
    order: list[str] = []
    for k in kernels:
        if k.layer not in order:
            order.append(k.layer)
    rows = []
    prev_cout = spec.input_shape[1]
    for name in order:
        ks = [k for k in kernels if k.layer == name]
        ms = float(sum(k.median_ms for k in ks))
        if name in geometry:
            g = geometry[name]
            rows.append(LayerTime(name, "conv", g["cin"], g["cout"], g["groups"], g["kernel"],
                                  g["out_hw"], g["macs"], [k.name for k in ks], ms))
            prev_cout = g["cout"]
        else:
            # a NIN pool's kernel; the final pool averages the head's whole output map (any
            # other model: the pool's own kernel is not known here)
            pool = getattr(spec, name, None) if name in ("pool1", "pool2") else None
            kernel = pool.kernel if pool else spec.layers()[-1]["out_hw"]
            rows.append(LayerTime(name, "pool", prev_cout, prev_cout, 1, kernel, 0, 0,
                                  [k.name for k in ks], ms))
    total = sum(r.median_ms for r in rows) or 1.0
    for r in rows:
        r.share = r.median_ms / total
    return rows
