"""``meta.json`` of a tuning log: :class:`ScheduleMeta`, read and written here and nowhere else.

Every meta.json tvmflow has written since the first shipped logs reads back (tests check the
shipped ones and a copy of the oldest formats in ``tests/data/schedule_meta/``).  Older files
lack what later tunes record:

* ``cpu`` (the CPU the set was tuned on): taken from ``detected.llvm_cpu``, what the host
  preset detected then; for a fixed target from its ``mcpu``;
* ``threads``, ``builders``, ``adapted_from``, ``dry_run``, ``repaired``: absent (None, empty).

A key this version does not know is kept as it was (``extra``) and written back unchanged, so
reading and writing a log never loses what a newer tvmflow recorded.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tvmflow.errors import TvmflowError

META = "meta.json"


@dataclass
class Adaptation:
    """One ``tune --adapt``: another CPU's records re-measured here (``adapted_from[i]``)."""

    cpu: str                                   # the CPU the source set was tuned on
    path: str                                  # the source set
    sha256: str                                # of its database files, when re-measured
    running_on: str | None = None
    top_k: int | None = None
    records: int = 0                           # committed here
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    tasks: int = 0
    n_tasks: int = 0
    source_trials: int | None = None
    est_source_ms: float | None = None
    est_here_ms: float | None = None
    est_log_before_ms: float | None = None
    est_log_after_ms: float | None = None
    task_records: dict[str, int] = field(default_factory=dict)
    when: str | None = None
    interrupted: bool = False

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not self.interrupted:
            data.pop("interrupted")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Adaptation":
        if not isinstance(data, dict):
            raise TypeError(f"an adapted_from entry must be an object, got {data!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


_NUM = (int, float)
_TYPES: dict[str, tuple[type, ...]] = {
    **{k: (str,) for k in ("variant", "target_name", "cpu", "mcpu", "tvm_version", "frontend",
                           "measured_on", "created", "updated")},
    **{k: (int,) for k in ("seed", "per_round", "population", "trials", "records", "n_tasks",
                           "n_tuned_tasks", "builders")},
    **{k: (dict,) for k in ("target", "detected", "pipeline", "weights", "task_trials",
                            "best_ms", "threads")},
    **{k: (list,) for k in ("tasks", "adapted_from", "repaired")},
    "wall_s": _NUM, "est_total_ms": _NUM, "interrupted": (bool,), "dry_run": (bool,)}


def _check_types(data: dict[str, Any]) -> None:
    for key, types in _TYPES.items():
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ValueError(f"field {key!r} is {value!r}, not {' or '.join(t.__name__ for t in types)}")


# fields written only when they say something (old logs lack them; a round trip keeps them out)
_OPTIONAL = ("threads", "builders", "population", "adapted_from", "dry_run", "repaired")


@dataclass
class ScheduleMeta:
    """What a tune recorded about its log (``<target>/<cpu>/<variant>/meta.json``)."""

    variant: str | None = None
    target_name: str | None = None
    target: dict[str, Any] | None = None       # the preset's target dict as tuned
    cpu: str | None = None                     # the CPU the set was tuned on (its cpu_key)
    mcpu: str | None = None
    detected: dict[str, Any] = field(default_factory=dict)   # what the host preset detected
    tvm_version: str | None = None
    pipeline: dict[str, Any] | None = None     # PipelineOptions.to_json() as tuned
    frontend: str | None = None
    seed: int | None = None
    per_round: int | None = None
    population: int | None = None              # the search's population per round
    measured_on: str | None = None
    trials: int = 0                            # search trials done (the budget used)
    records: int | None = None                 # records in the database
    wall_s: float = 0.0
    n_tasks: int | None = None
    n_tuned_tasks: int | None = None
    tasks: list[str] = field(default_factory=list)
    weights: dict[str, int] = field(default_factory=dict)
    task_trials: dict[str, int] = field(default_factory=dict)
    best_ms: dict[str, float] = field(default_factory=dict)
    est_total_ms: float | None = None
    created: str | None = None
    updated: str | None = None
    interrupted: bool = False
    threads: dict[str, Any] | None = None      # {"requested": N, "tvm": measured}
    builders: int | None = None
    adapted_from: list[Adaptation] = field(default_factory=list)
    dry_run: bool = False
    repaired: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)      # keys of a newer tvmflow

    @property
    def isa(self) -> str | None:
        """The vector ISA class detected on the CPU the set was tuned on, if recorded."""
        from tvmflow.target.cpus import isa_from_meta
        return isa_from_meta({"detected": self.detected})

    def adapted_tasks(self) -> dict[str, int]:
        """Records adapted from other CPUs' sets, per task."""
        out: dict[str, int] = {}
        for a in self.adapted_from:
            for name, n in a.task_records.items():
                out[name] = out.get(name, 0) + int(n)
        return out

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "extra"}
        data["adapted_from"] = [a.to_json() for a in self.adapted_from]
        for key in _OPTIONAL:
            if data[key] is None or data[key] is False or data[key] in ([], {}):
                data.pop(key)
        return {**self.extra, **data}

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "meta.json") -> "ScheduleMeta":
        if not isinstance(data, dict):
            raise TvmflowError(f"{where} is not a JSON object")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        try:
            _check_types(data)
            values["adapted_from"] = [Adaptation.from_json(a)
                                      for a in data.get("adapted_from") or []]
            values["detected"] = dict(data.get("detected") or {})
            for key in ("tasks", "repaired"):
                values[key] = list(data.get(key) or [])
            for key in ("weights", "task_trials", "best_ms"):
                values[key] = dict(data.get(key) or {})
            if not values.get("cpu"):       # before sets were kept per CPU
                values["cpu"] = values["detected"].get("llvm_cpu") or data.get("mcpu")
            return cls(**values, extra={k: v for k, v in data.items() if k not in known})
        except (TypeError, ValueError) as exc:
            raise TvmflowError(f"{where} is not a tuning log's meta.json: {exc}",
                               hint="delete it or run tvmflow tune --fresh") from None

    @classmethod
    def read(cls, log_dir: str | Path) -> "ScheduleMeta | None":
        """The log's meta.json, None when it has none; a corrupt one is a TvmflowError."""
        path = Path(log_dir) / META
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise TvmflowError(f"corrupt {path}: {exc}",
                               hint="delete it or run tvmflow tune --fresh") from None
        return cls.from_json(data, where=str(path))

    def text(self) -> str:
        """The file's bytes as written (sorted keys, one-space indent)."""
        return json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n"
