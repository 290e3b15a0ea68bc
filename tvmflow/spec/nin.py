"""The Network-in-Network module, built from a :class:`~tvmflow.spec.registry.VariantSpec`.

Module names and indices follow micronet's ``Net.tnn_bin`` Sequential, so micronet
checkpoints load as they are.  ``FP_Conv2d`` reproduces what micronet's printed trees hide:
the ReLU on the input of the first block and the channel shuffle before a grouped conv.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tvmflow.errors import TvmflowError
from tvmflow.spec.registry import VariantSpec, get_spec
from tvmflow.spec.weights import randomize  # noqa: F401 (where it was, for callers)

# positions of the BN layers whose gammas network slimming ranks (all but the head's)
BN_KEYS = ("tnn_bin.1", "tnn_bin.2.bn", "tnn_bin.3.bn", "tnn_bin.5.bn", "tnn_bin.6.bn",
           "tnn_bin.7.bn", "tnn_bin.9.bn", "tnn_bin.10.bn")
CONV_KEYS = ("tnn_bin.0", "tnn_bin.2.conv", "tnn_bin.3.conv", "tnn_bin.5.conv", "tnn_bin.6.conv",
             "tnn_bin.7.conv", "tnn_bin.9.conv", "tnn_bin.10.conv", "tnn_bin.11")
HEAD_BN_KEY = "tnn_bin.12"


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class FP_Conv2d(nn.Module):  # noqa: N801 - micronet's name, kept for checkpoint parity
    """[ReLU if first] -> [shuffle] -> conv -> BN -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, groups: int = 1,
                 shuffle_groups: int = 0, first: bool = False):
        super().__init__()
        self.first = first
        self.shuffle_groups = shuffle_groups
        self.conv = nn.Conv2d(cin, cout, kernel, stride=1, padding=kernel // 2, groups=groups)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.first:
            x = torch.relu(x)
        if self.shuffle_groups:
            x = channel_shuffle(x, self.shuffle_groups)
        return self.relu(self.bn(self.conv(x)))


def _pool(p) -> nn.Module:
    if p.kind == "max":
        return nn.MaxPool2d(p.kernel, p.stride, p.padding)
    return nn.AvgPool2d(p.kernel, p.stride, p.padding)


class NIN(nn.Module):
    def __init__(self, spec: VariantSpec):
        super().__init__()
        self.spec = spec
        c, k, g, s = spec.channels, spec.kernels, spec.groups, spec.shuffle
        final = spec.pool2.out_size(spec.pool1.out_size(spec.image_size))
        blocks = [FP_Conv2d(c[i - 1], c[i], k[i], g[i], s[i], first=(i == 1)) for i in range(1, 8)]
        self.tnn_bin = nn.Sequential(
            nn.Conv2d(spec.in_channels, c[0], k[0], stride=1, padding=k[0] // 2),
            nn.BatchNorm2d(c[0]),
            blocks[0], blocks[1],
            _pool(spec.pool1),
            blocks[2], blocks[3], blocks[4],
            _pool(spec.pool2),
            blocks[5], blocks[6],
            nn.Conv2d(c[7], spec.num_classes, 1),
            nn.BatchNorm2d(spec.num_classes),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(final, stride=1, padding=0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tnn_bin(x)
        return x.view(x.size(0), -1)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _is_state_dict(obj) -> bool:
    return (isinstance(obj, dict) and bool(obj)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def _cfg(cfg, path: Path) -> list[int] | None:
    if cfg is None:
        return None
    if (not isinstance(cfg, (list, tuple))
            or not all(isinstance(c, int) and not isinstance(c, bool) for c in cfg)):
        raise TvmflowError(f"checkpoint {path}: its 'cfg' must be a list of channel counts, "
                           f"got {cfg!r}"[:300])
    return list(cfg)


def load_checkpoint_file(path: str | Path) -> dict:
    """Read a checkpoint with ``weights_only=True``; returns {'cfg': list|None, 'state_dict': ...}.

    Anything that is not one (a missing, empty or non-PyTorch file, a pickle of something
    else, a state_dict without tensors) is one TvmflowError line."""
    path = Path(path)
    if not path.is_file():
        raise TvmflowError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise TvmflowError(f"checkpoint {path} is empty (0 bytes)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, refused globals, truncated files
        raise TvmflowError(f"cannot load checkpoint {path} with weights_only=True (is it a "
                           f"PyTorch checkpoint?): {_first_line(exc)}"[:400]) from None
    if isinstance(obj, dict) and "state_dict" in obj:
        if not _is_state_dict(obj["state_dict"]):
            raise TvmflowError(f"checkpoint {path}: its 'state_dict' is not a dict of named "
                               "tensors")
        return {"cfg": _cfg(obj.get("cfg"), path), "state_dict": obj["state_dict"]}
    if _is_state_dict(obj):
        return {"cfg": None, "state_dict": obj}
    raise TvmflowError(f"checkpoint {path} is neither micronet's {{'cfg', 'state_dict'}} "
                       "nor a plain state_dict (a dict of named tensors)")


def load_state(model: NIN, state_dict: dict, where: str) -> None:
    """Load weights, turning any key or shape mismatch into one clear error."""
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    if missing:
        raise TvmflowError(f"{where}: checkpoint lacks {len(missing)} tensor(s) of variant "
                           f"{model.spec.name!r}, first {missing[0]}")
    for key, ref in expected.items():
        if key in state_dict and tuple(state_dict[key].shape) != tuple(ref.shape):
            raise TvmflowError(f"{where}: checkpoint shapes don't match its cfg: {key} is "
                               f"{tuple(state_dict[key].shape)}, cfg "
                               f"{list(model.spec.channels)} needs {tuple(ref.shape)}")
    model.load_state_dict({k: v for k, v in state_dict.items() if k in expected}, strict=False)


def build_model(spec: VariantSpec, load_checkpoint: bool = True) -> NIN:
    model = NIN(spec)
    if load_checkpoint and spec.checkpoint:
        ckpt = load_checkpoint_file(spec.checkpoint)
        load_state(model, ckpt["state_dict"], f"checkpoint {spec.checkpoint}")
    return model.eval()


def example_input(spec: VariantSpec, seed: int = 0, batch: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + 1)
    shape = (batch,) + tuple(spec.input_shape[1:])
    return torch.randn(shape, generator=gen)


def create_model(name: str, pretrained: bool = True, seed: int = 0, **overrides) -> nn.Module:
    """Build the PyTorch module of a variant (``overrides`` as in
    :func:`~tvmflow.spec.registry.get_spec`); loads its checkpoint when it names one.  A
    torchvision, entry-point or .pt2 variant gives its module with tvmflow's weights (seeded
    random ones unless it has its own); an ONNX variant has none (an error)."""
    spec = get_spec(name, **overrides)
    if not isinstance(spec, VariantSpec):
        from tvmflow.spec.torch_models import torch_module
        if spec.scheme == "onnx":
            raise TvmflowError(f"variant {name!r} is an ONNX file: it has no PyTorch module")
        return torch_module(spec, seed)
    return build_model(spec, load_checkpoint=pretrained)
