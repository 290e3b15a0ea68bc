"""Import a variant into TVM: the model object of the flow.

``import_model("pruned-a8")`` builds the PyTorch module (its checkpoint's weights, or seeded
random weights with randomised BN statistics), traces it with torch.export, and imports it
into Relax.  ``frontend="onnx"`` goes torch -> ONNX file -> Relax instead, the path for users
who only have an ONNX file (``import_onnx_file``).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tvmflow.errors import TvmflowError
from tvmflow.spec.registry import VariantSpec, get_spec

FRONTENDS = ("torch", "onnx")


@dataclass
class TVMFlowModel:
    """A variant imported into TVM: Relax module, the PyTorch reference, input facts."""

    spec: VariantSpec
    mod: Any  # tvm.IRModule (Relax), weights embedded as constants
    torch_model: Any
    frontend: str
    seed: int
    input_name: str
    input_shape: tuple[int, ...]
    input_dtype: str

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def weights(self) -> str:
        return f"checkpoint {self.spec.checkpoint}" if self.spec.checkpoint else f"random (seed {self.seed})"

    def example_input(self, seed: int | None = None) -> np.ndarray:
        from tvmflow.spec.nin import example_input
        return example_input(self.spec, self.seed if seed is None else seed).numpy()

    def reference(self, x: np.ndarray) -> np.ndarray:
        import torch
        with torch.no_grad():
            return self.torch_model(torch.from_numpy(x)).numpy()


def torch_model_for(spec: VariantSpec, seed: int = 0):
    """The PyTorch module with the weights tvmflow uses for ``spec``."""
    from tvmflow.spec.nin import build_model, randomize
    model = build_model(spec, load_checkpoint=True)
    return model if spec.checkpoint else randomize(model, seed)


def import_model(variant: str | VariantSpec, *, frontend: str = "torch", seed: int = 0) -> TVMFlowModel:
    from tvmflow.adapter import frontend as fe
    from tvmflow.spec.nin import example_input
    if frontend not in FRONTENDS:
        raise TvmflowError(f"unknown frontend {frontend!r}; choose one of {', '.join(FRONTENDS)}")
    spec = variant if isinstance(variant, VariantSpec) else get_spec(variant)
    model = torch_model_for(spec, seed)
    example = example_input(spec, seed)
    if frontend == "torch":
        mod = fe.from_torch(model, example)
    else:
        with tempfile.TemporaryDirectory(prefix="tvmflow-onnx-") as tmp:
            path = fe.export_onnx(model, example, Path(tmp) / f"{spec.name}.onnx")
            mod = fe.from_onnx(path, "input", tuple(example.shape))
    name, shape, dtype = fe.main_input(mod)
    return TVMFlowModel(spec=spec, mod=mod, torch_model=model, frontend=frontend, seed=seed,
                        input_name=name, input_shape=shape, input_dtype=dtype)


def import_onnx_file(path: str | Path, input_name: str = "input",
                     shape: tuple[int, ...] = (1, 3, 32, 32)):
    """Relax module of a user's own ONNX file (no PyTorch reference)."""
    from tvmflow.adapter import frontend as fe
    path = Path(path)
    if not path.is_file():
        raise TvmflowError(f"ONNX file {path} does not exist")
    return fe.from_onnx(path, input_name, shape)
