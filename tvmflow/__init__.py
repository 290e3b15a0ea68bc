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

from tvmflow.errors import TvmflowError
from tvmflow.spec.nin import create_model
from tvmflow.spec.registry import get_spec, list_models
from tvmflow.ir.frontend import import_model
from tvmflow.artifact.compile import compile
from tvmflow.tuning.tune import tune
from tvmflow.measure.bench import bench
from tvmflow.experiments.compare import compare
from tvmflow.runtime.run import run
from tvmflow.ir.verify import verify
from tvmflow.spec.prune import prune
from tvmflow.measure.profile import profile
from tvmflow.experiments.sweep import sweep

from tvmflow._version import __version__

__all__ = ["TvmflowError", "bench", "compare", "compile", "create_model", "get_spec",
           "import_model", "list_models", "profile", "prune", "run", "sweep", "tune", "verify",
           "__version__"]
