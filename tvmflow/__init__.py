"""tvmflow: does pruning, grouping or channel alignment make a CNN faster on a real device?

The library API mirrors the CLI, one function per command::

    import tvmflow
    tvmflow.list_models("pruned*")              # ['pruned', 'pruned-a8']
    model = tvmflow.import_model("pruned-a8")   # Relax IRModule + params (a TVMFlowModel)
    tvmflow.tune("pruned-a8", "host", trials=64)
    pkg = tvmflow.compile("pruned-a8", "host")  # .so + JSON sidecar (a Package)
    report = tvmflow.compare("host")            # a BenchReport: table, JSON, CSV, plot

TVM itself is imported lazily, on the first call that needs it.
"""

from __future__ import annotations

import importlib

from tvmflow._version import __version__
from tvmflow.errors import TvmflowError

# name -> the module that defines it; imported on first use, so that `import tvmflow` (and
# the CLI's argument checks) load neither PyTorch nor TVM
_API = {
    "create_model": "tvmflow.spec.nin",
    "get_spec": "tvmflow.spec.registry",
    "list_models": "tvmflow.spec.registry",
    "prune": "tvmflow.spec.prune",
    "import_model": "tvmflow.ir.frontend",
    "verify": "tvmflow.ir.verify",
    "tune": "tvmflow.tuning.tune",
    "compile": "tvmflow.artifact.compile",
    "run": "tvmflow.runtime.run",
    "bench": "tvmflow.measure.bench",
    "profile": "tvmflow.measure.profile",
    "compare": "tvmflow.experiments.compare",
    "sweep": "tvmflow.experiments.sweep",
}

__all__ = ["TvmflowError", "__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tvmflow' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])
