"""Building the PyTorch module of a torchvision, entry-point or saved-program variant (a
:class:`~tvmflow.spec.sources.SourceVariant`), with tvmflow's seeded weights."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

from tvmflow.errors import TvmflowError

def torchvision_models():
    """``torchvision.models``.  PyPI's torchvision is built against CUDA torch; beside the CPU
    torch its C++ ops do not load and ``import torchvision`` fails.  The architectures are
    plain Python, so then the package is entered without its ``__init__`` (which registers the
    ops) and only ``torchvision.models`` is imported."""
    try:
        import torchvision.models as tvm_models
        return tvm_models
    except ImportError as exc:
        raise TvmflowError(f"torchvision is not installed ({exc})",
                           hint="pip install torchvision==0.28.0") from None
    except RuntimeError:
        pass
    for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[mod]
    spec = importlib.util.find_spec("torchvision")
    pkg = types.ModuleType("torchvision")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__package__ = "torchvision"
    pkg.__tvmflow_models_only__ = True
    sys.modules["torchvision"] = pkg
    return importlib.import_module("torchvision.models")


def _torchvision_module(spec: SourceVariant):
    models = torchvision_models()
    names = models.list_models()
    if spec.ref not in names:
        close = difflib.get_close_matches(spec.ref, names, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise TvmflowError(f"variant {spec.name!r}: torchvision has no model {spec.ref!r}{hint}")
    try:
        return models.get_model(spec.ref, weights=None, **spec.kwargs)
    except (TypeError, ValueError) as exc:
        raise TvmflowError(f"variant {spec.name!r}: torchvision {spec.ref}"
                           f"({_kwargs_text(spec.kwargs)}) failed: {exc}") from None


def _kwargs_text(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def _entry_module(spec: SourceVariant):
    import torch.nn as nn
    module_name, func_name = spec.ref.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an ImportError, or the module's own error on import
        raise TvmflowError(f"variant {spec.name!r}: entry point {spec.ref}: cannot import "
                           f"{module_name!r}: {type(exc).__name__}: {exc}") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise TvmflowError(f"variant {spec.name!r}: entry point {spec.ref}: {module_name!r} "
                           f"has no function {func_name!r}")
    try:
        model = func(**spec.kwargs)
    except Exception as exc:
        raise TvmflowError(f"variant {spec.name!r}: entry point {spec.ref}"
                           f"({_kwargs_text(spec.kwargs)}) raised {type(exc).__name__}: "
                           f"{exc}") from None
    if not isinstance(model, nn.Module):
        raise TvmflowError(f"variant {spec.name!r}: entry point {spec.ref} returned "
                           f"{type(model).__name__} ({model!r:.40}), not a torch.nn.Module")
    return model


def load_program(spec: SourceVariant):
    """The ExportedProgram of a ``pt2:`` variant."""
    import torch
    path = Path(spec.ref)
    if not path.is_file():
        raise TvmflowError(f"variant {spec.name!r}: program file {path} does not exist")
    try:
        return torch.export.load(str(path))
    except Exception as exc:
        raise TvmflowError(f"variant {spec.name!r}: cannot load {path} as a saved "
                           f"torch.export program: {type(exc).__name__}: {exc}") from None


def torch_module(spec: SourceVariant, seed: int = 0):
    """The eval-mode PyTorch module of a torch-kind variant, with tvmflow's weights."""
    import torch
    from tvmflow.spec.weights import randomize
    if spec.scheme == "pt2":
        return ProgramModule(load_program(spec).module())
    # the layers randomize() leaves alone (Linear, ...) keep their init: seeded too, so that
    # every process builds the same model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _torchvision_module(spec) if spec.scheme == "torchvision" else _entry_module(spec)
    if spec.checkpoint:
        _load_state_dict(model, spec)
        return model.eval()
    return randomize(model, seed)


def _program_module_class():
    import torch.nn as nn

    class ProgramModule(nn.Module):
        """A saved program's module, usable where an eval-mode nn.Module is expected (the
        module torch.export gives back refuses ``eval()``; it has no training mode)."""

        def __init__(self, graph_module):
            super().__init__()
            self.program = graph_module

        def train(self, mode: bool = True):
            return self

        def forward(self, x):
            return self.program(x)

    return ProgramModule


def ProgramModule(graph_module):  # noqa: N802 - a factory: torch is imported only when used
    return _program_module_class()(graph_module)


def _load_state_dict(model, spec: SourceVariant) -> None:
    import torch
    try:
        state = torch.load(spec.checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TvmflowError(f"variant {spec.name!r}: cannot load checkpoint {spec.checkpoint}: "
                           f"{type(exc).__name__}: {exc}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TvmflowError(f"variant {spec.name!r}: checkpoint {spec.checkpoint} does not fit "
                           f"the model: {first}") from None


def example_input(spec: SourceVariant, seed: int = 0):
    """The seeded example input (as for NIN variants: a normal sample, seed + 1)."""
    import torch
    gen = torch.Generator().manual_seed(seed + 1)
    return torch.randn(tuple(spec.input_shape), generator=gen)


def check_input_shape(spec: SourceVariant, model) -> None:
    """Run the model once on the declared input: a shape it refuses is a clear error."""
    import torch
    with torch.no_grad():
        try:
            model(torch.zeros(tuple(spec.input_shape)))
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TvmflowError(f"variant {spec.name!r}: input shape {list(spec.input_shape)} "
                               f"does not fit the model: {first}") from None
