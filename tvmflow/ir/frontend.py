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
from tvmflow.spec.registry import MODEL_SPECS, ModelSpec, get_spec
from tvmflow.spec.sources import SourceVariant

FRONTENDS = ("torch", "onnx")


@dataclass
class TVMFlowModel:
    """A variant imported into TVM: Relax module, the reference it must match, input facts.

    The reference is the PyTorch module (``torch_model``) for NIN and torch-kind variants, and
    ONNX Runtime on the file for an ONNX variant (``torch_model`` is None then)."""

    spec: ModelSpec
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
        if isinstance(self.spec, SourceVariant) and self.spec.scheme in ("onnx", "pt2"):
            return f"the {self.spec.scheme} file's own"
        return f"checkpoint {self.spec.checkpoint}" if self.spec.checkpoint else f"random (seed {self.seed})"

    def example_input(self, seed: int | None = None) -> np.ndarray:
        return example_input(self.spec, self.seed if seed is None else seed)

    def reference(self, x: np.ndarray) -> np.ndarray:
        if self.torch_model is None:
            return onnx_reference(self.spec, x)
        import torch
        with torch.no_grad():
            return self.torch_model(torch.from_numpy(x)).numpy()


def example_input(spec: ModelSpec, seed: int = 0) -> np.ndarray:
    """The seeded example input of any variant, as numpy."""
    if isinstance(spec, SourceVariant):
        from tvmflow.spec import torch_models as sources
        return sources.example_input(spec, seed).numpy()
    from tvmflow.spec.nin import example_input as nin_input
    return nin_input(spec, seed).numpy()


def onnx_reference(spec: SourceVariant, x: np.ndarray) -> np.ndarray:
    """The ONNX file's output for ``x``, by ONNX Runtime (one CPU thread pool, default)."""
    import onnxruntime as ort
    sess = ort.InferenceSession(spec.ref, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def torch_model_for(spec: ModelSpec, seed: int = 0):
    """The PyTorch module with the weights tvmflow uses for ``spec`` (None for ONNX)."""
    if isinstance(spec, SourceVariant):
        from tvmflow.spec import torch_models as sources
        return None if spec.scheme == "onnx" else sources.torch_module(spec, seed)
    from tvmflow.spec.nin import build_model, randomize
    model = build_model(spec, load_checkpoint=True)
    return model if spec.checkpoint else randomize(model, seed)


def import_model(variant: str | ModelSpec, *, frontend: str = "torch", seed: int = 0) -> TVMFlowModel:
    from tvmflow.adapter import frontend as fe
    if frontend not in FRONTENDS:
        raise TvmflowError(f"unknown frontend {frontend!r}; choose one of {', '.join(FRONTENDS)}")
    spec = variant if isinstance(variant, MODEL_SPECS) else get_spec(variant)
    if isinstance(spec, SourceVariant):
        return _import_source(spec, frontend, seed)
    from tvmflow.spec.nin import example_input as nin_input
    model = torch_model_for(spec, seed)
    example = nin_input(spec, seed)
    if frontend == "torch":
        mod = fe.from_torch(model, example)
    else:
        with tempfile.TemporaryDirectory(prefix="tvmflow-onnx-") as tmp:
            path = fe.export_onnx(model, example, Path(tmp) / f"{spec.name}.onnx")
            mod = fe.from_onnx(path, "input", tuple(example.shape))
    name, shape, dtype = fe.main_input(mod)
    return TVMFlowModel(spec=spec, mod=mod, torch_model=model, frontend=frontend, seed=seed,
                        input_name=name, input_shape=shape, input_dtype=dtype)


def _import_source(spec: SourceVariant, frontend: str, seed: int) -> TVMFlowModel:
    """An ONNX file through the ONNX frontend; a torch-kind model through torch.export (or,
    with ``frontend="onnx"``, exported to ONNX first)."""
    from tvmflow.adapter import frontend as fe
    from tvmflow.spec import onnx_info
    from tvmflow.spec import torch_models as sources
    if spec.scheme == "onnx":
        _shape, _dtype, name = onnx_info.input_shape(Path(spec.ref), spec.input_shape)  # fits?
        mod = fe.from_onnx(Path(spec.ref), name, spec.input_shape, variant=spec.name)
        model, frontend = None, "onnx"                # an ONNX file has no other frontend
    else:
        model = sources.torch_module(spec, seed)
        sources.check_input_shape(spec, model)
        example = sources.example_input(spec, seed)
        if spec.scheme == "pt2" and frontend == "torch":
            mod = fe.from_program(sources.load_program(spec), example, variant=spec.name)
        elif frontend == "torch":
            mod = fe.from_torch(model, example, variant=spec.name)
        else:
            with tempfile.TemporaryDirectory(prefix="tvmflow-onnx-") as tmp:
                path = fe.export_onnx(model, example, Path(tmp) / f"{spec.name}.onnx")
                mod = fe.from_onnx(path, "input", tuple(example.shape), variant=spec.name)
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
