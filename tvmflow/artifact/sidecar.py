"""The Sidecar record: what ``NAME.json`` next to a compiled ``NAME.so`` says, read and written here only.

A sidecar records the variant and its configuration, the weights, the target preset (with
what was detected), the input, the tool versions, the schedule database applied and how
many tasks it covered, the module's file and sha256, how it was built (linker, whether the
build is reproducible), and for CUDA the kind of device code (cubin + SM arch).

Format 2 (this one) adds the ``build`` part to format 1; a format-1 sidecar loads as it is
(``build`` is None) and :func:`tvmflow.artifact.compile.stale_reason` calls it stale, so the
next compile rewrites it.  A sidecar of a newer format is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

SIDECAR_FORMAT = 2
READABLE_FORMATS = (1, 2)


def jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples -> lists, paths -> str)."""
    return json.loads(json.dumps(value, default=str))


class _Part:
    """A sidecar part: its fields as JSON keys (None left out), plus ``extra`` keys where the
    part keeps keys it does not name (a preset's or a schedule log's further keys)."""

    def to_json(self) -> dict[str, Any]:
        out = {f.name: jsonable(getattr(self, f.name)) for f in fields(self)
               if f.name != "extra" and getattr(self, f.name) is not None}
        out.update(jsonable(getattr(self, "extra", {})))
        return out

    @classmethod
    def from_json(cls, data: Any):
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__} is not a JSON object")
        names = {f.name for f in fields(cls)} - {"extra"}
        rest = {k: v for k, v in data.items() if k not in names}
        kwargs = {k: v for k, v in data.items() if k in names}
        if rest:
            if "extra" not in {f.name for f in fields(cls)}:
                raise ValueError(f"{cls.__name__}: unknown keys {sorted(rest)}")
            kwargs["extra"] = rest
        try:
            return cls(**kwargs)
        except TypeError as exc:      # a required key is missing
            raise ValueError(f"{cls.__name__}: {exc}") from None


@dataclass
class VariantPart(_Part):
    name: str
    cfg: dict[str, Any] | None = None


@dataclass
class WeightsPart(_Part):
    kind: str = "random"             # "random" (seeded) | "checkpoint"
    seed: int | None = None
    path: str | None = None
    sha256: str | None = None


@dataclass
class TargetPart(_Part):
    name: str
    device: str = "cpu"
    target: dict[str, Any] | None = None
    host: dict[str, Any] | None = None
    detected: dict[str, Any] | None = None
    cpu_key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)   # the preset's other keys

    def to_json(self) -> dict[str, Any]:
        return {"host": None, **super().to_json()}

    @property
    def cpu_triple(self) -> str:
        """The triple of the module's CPU code (the host's, for CUDA)."""
        cpu = self.host if self.device == "cuda" else self.target
        return (cpu or {}).get("mtriple") or "x86_64-linux-gnu"


@dataclass
class InputPart(_Part):
    shape: list[int]
    dtype: str = "float32"
    seed: int = 0
    name: str | None = None


@dataclass
class VersionsPart(_Part):
    tvmflow: str | None = None
    tvm: str | None = None
    tvm_ffi: str | None = None
    torch: str | None = None
    python: str | None = None


@dataclass
class SchedulesPart(_Part):
    """The schedule database applied (from :func:`tvmflow.tuning.schedules.database_info`)."""

    path: str
    sha256: str
    trials: int | None = None
    records: int | None = None
    cpu: str | None = None           # the CPU the set was tuned on
    running_on: str | None = None    # this target's CPU at compile time
    match: str | None = None         # "exact" | "nearest"
    note: str | None = None
    pipeline: dict[str, Any] | None = None
    dry_run: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)   # target, variant, mcpu, tvm_version

    KEEP = ("path", "sha256", "trials", "records", "target", "variant", "mcpu", "pipeline",
            "tvm_version", "cpu", "running_on", "match", "note", "dry_run")

    @classmethod
    def from_info(cls, info: dict[str, Any] | None) -> "SchedulesPart | None":
        """From a schedules ``info`` dict (None, or one without sha256: no database)."""
        if not info or not info.get("sha256"):
            return None
        return cls.from_json({k: jsonable(info[k]) for k in cls.KEEP if k in info})


@dataclass
class CoveragePart(_Part):
    """How many of the model's tasks had a tuned schedule."""

    tasks: int | None = None
    tuned: int = 0
    default: int | None = None
    fixed: list[str] = field(default_factory=list)
    pipeline: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)   # task_names, tuned_names

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out.setdefault("default", None)
        out.setdefault("tasks", None)
        return out

    def summary(self) -> dict[str, Any]:
        """The counts, without the task name lists."""
        return {k: v for k, v in self.to_json().items() if not k.endswith("_names")}


@dataclass
class ModulePart(_Part):
    sha256: str
    file: str | None = None
    bytes: int | None = None
    build_seconds: float | None = None


@dataclass
class BuildPart(_Part):
    """How the ``.so`` was made, and whether the same inputs give the same bytes."""

    linker: str | None = None            # the compiler that linked it (g++, a cross g++)
    linker_version: str | None = None
    reproducible: bool | None = None
    why_not: str | None = None           # set when reproducible is False


@dataclass
class CudaPart(_Part):
    code: str = "cubin"
    archs: list[str] = field(default_factory=list)
    nvcc: str | None = None
    nvcc_version: str | None = None
    cuda_graph: bool = False
    extra: dict[str, Any] = field(default_factory=dict)   # cuda_modules, cubin_bytes, embedded


_PARTS = {"variant": VariantPart, "weights": WeightsPart, "target": TargetPart,
          "input": InputPart, "versions": VersionsPart, "schedules": SchedulesPart,
          "coverage": CoveragePart, "module": ModulePart, "build": BuildPart, "cuda": CudaPart}
REQUIRED = ("variant", "target", "input", "module")


@dataclass
class Sidecar:
    """The typed sidecar of one compiled module."""

    variant: VariantPart
    target: TargetPart
    input: InputPart
    module: ModulePart
    weights: WeightsPart = field(default_factory=WeightsPart)
    versions: VersionsPart = field(default_factory=VersionsPart)
    schedules: SchedulesPart | None = None
    coverage: CoveragePart = field(default_factory=CoveragePart)
    build: BuildPart | None = None
    cuda: CudaPart | None = None
    format: int = SIDECAR_FORMAT
    created: str | None = None
    frontend: str | None = None
    cross_compiler: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": self.format, "created": self.created}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _PARTS:
                if value is not None:
                    out[f.name] = value.to_json()
                elif f.name == "schedules":
                    out[f.name] = None           # "no database", said explicitly
            elif f.name not in out:
                out[f.name] = value
        return out

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"

    @classmethod
    def from_json(cls, data: Any) -> "Sidecar":
        """Raises ValueError naming what is wrong (not an object, a missing part, a newer
        format, a part of the wrong shape)."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        for key in REQUIRED:
            if key not in data:
                raise ValueError(f"missing key {key!r}")
        fmt = data.get("format", 1)
        if fmt not in READABLE_FORMATS:
            raise ValueError(f"sidecar format {fmt!r}; this tvmflow reads formats "
                             f"{', '.join(map(str, READABLE_FORMATS))}")
        kwargs: dict[str, Any] = {"format": fmt}
        for key, value in data.items():
            if key in _PARTS:
                kwargs[key] = None if value is None else _PARTS[key].from_json(value)
            elif key in ("created", "frontend", "cross_compiler"):
                kwargs[key] = value
            elif key != "format":
                raise ValueError(f"unknown key {key!r}")
        side = cls(**{k: v for k, v in kwargs.items() if v is not None or k == "schedules"})
        if not isinstance(side.module.sha256, str) or not isinstance(side.input.shape, list):
            raise ValueError("module.sha256 must be a string and input.shape a list")
        return side

    @classmethod
    def loads(cls, text: str) -> "Sidecar":
        return cls.from_json(json.loads(text))
