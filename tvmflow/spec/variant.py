"""The NIN variant record: per-layer settings of a Network-in-Network, parsed and checked
(:class:`Variant`; files are found by :mod:`tvmflow.spec.registry`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from tvmflow.errors import TvmflowError
from tvmflow.spec.record import SpecRecord

NUM_CONVS = 8  # conv0 + seven FP_Conv2d blocks; the 1x1 head to the classes is implied
LAYER_NAMES = ("conv0", "block2", "block3", "block5", "block6", "block7", "block9", "block10")
LIST_FIELDS = ("channels", "kernels", "groups", "shuffle")
POOL_KINDS = ("max", "avg")


@dataclass(frozen=True)
class Pool:
    kind: str
    kernel: int
    stride: int
    padding: int = 0

    def out_size(self, size: int) -> int:
        return (size + 2 * self.padding - self.kernel) // self.stride + 1


@dataclass(frozen=True)
class Variant(SpecRecord):
    """Everything needed to build one NIN variant: the spec stage's record."""

    name: str
    channels: tuple[int, ...]
    kernels: tuple[int, ...]
    groups: tuple[int, ...]
    shuffle: tuple[int, ...]
    pool1: Pool
    pool2: Pool
    description: str = ""
    num_classes: int = 10
    in_channels: int = 3
    image_size: int = 32
    base: str | None = None
    checkpoint: str | None = None  # absolute path to a {'cfg','state_dict'} checkpoint
    prune: dict[str, Any] = field(default_factory=dict)
    source: str | None = None  # file the spec was read from

    # ---- derived facts -------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, self.in_channels, self.image_size, self.image_size)

    def layers(self) -> list[dict[str, Any]]:
        """Per-conv geometry at the spec's input size (head included)."""
        rows = []
        size = self.image_size
        cin = self.in_channels
        for i in range(NUM_CONVS):
            if i == 3:
                size = self.pool1.out_size(size)
            if i == 6:
                size = self.pool2.out_size(size)
            cout, k, g = self.channels[i], self.kernels[i], self.groups[i]
            rows.append(dict(name=LAYER_NAMES[i], cin=cin, cout=cout, kernel=k, groups=g,
                             shuffle=self.shuffle[i], out_hw=size,
                             macs=size * size * cout * (cin // g) * k * k,
                             params=cout * (cin // g) * k * k + cout + 2 * cout))
            cin = cout
        rows.append(dict(name="head", cin=cin, cout=self.num_classes, kernel=1, groups=1,
                         shuffle=0, out_hw=size, macs=size * size * self.num_classes * cin,
                         params=self.num_classes * cin + 3 * self.num_classes))
        return rows

    @property
    def macs(self) -> int:
        return sum(r["macs"] for r in self.layers())

    @property
    def params(self) -> int:
        return sum(r["params"] for r in self.layers())

    def cfg(self) -> dict[str, Any]:
        """The spec as plain JSON-able data (what sidecars and reports record)."""
        data = dataclasses.asdict(self)
        for key in LIST_FIELDS:
            data[key] = list(data[key])
        data.pop("source")
        return data

    def summary(self) -> dict[str, Any]:
        return dict(name=self.name, description=self.description,
                    channels=list(self.channels), groups=list(self.groups),
                    shuffle=list(self.shuffle), kernels=list(self.kernels),
                    params=self.params, macs=self.macs,
                    input_shape=list(self.input_shape), source=self.source)

    @staticmethod
    def _build(data: dict[str, Any], where: str) -> "Variant":
        return _build_spec(data, where=where)


# ---- parsing and validation ----------------------------------------------------------------

def _int_list(value: Any, key: str, where: str) -> tuple[int, ...]:
    if (not isinstance(value, (list, tuple)) or len(value) != NUM_CONVS
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise TvmflowError(f"{where}: field '{key}' must be a list of {NUM_CONVS} integers, "
                           f"got {value!r}")
    return tuple(int(v) for v in value)


def _pool(value: Any, key: str, where: str) -> Pool:
    if isinstance(value, Pool):
        return value
    if not isinstance(value, dict):
        raise TvmflowError(f"{where}: field '{key}' must be a table like "
                           "{ kind = \"max\", kernel = 3, stride = 2, padding = 1 }")
    unknown = set(value) - {"kind", "kernel", "stride", "padding"}
    if unknown:
        raise TvmflowError(f"{where}: field '{key}' has unknown keys {sorted(unknown)}")
    kind = value.get("kind")
    if kind not in POOL_KINDS:
        raise TvmflowError(f"{where}: field '{key}.kind' must be one of {POOL_KINDS}, got {kind!r}")
    try:
        pool = Pool(kind, int(value["kernel"]), int(value["stride"]), int(value.get("padding", 0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise TvmflowError(f"{where}: field '{key}' needs integer kernel and stride ({exc})") from None
    if pool.kernel < 1 or pool.stride < 1 or pool.padding < 0 or 2 * pool.padding > pool.kernel:
        raise TvmflowError(f"{where}: field '{key}' has an impossible pool {value!r}")
    return pool


def _build_spec(data: dict[str, Any], where: str) -> Variant:
    known = {f.name for f in dataclasses.fields(Variant)}
    unknown = set(data) - known
    if unknown:
        raise TvmflowError(f"{where}: unknown field(s) {sorted(unknown)}; "
                           f"known fields are {sorted(known - {'source'})}")
    for key in ("name", *LIST_FIELDS, "pool1", "pool2"):
        if key not in data or data[key] is None:
            raise TvmflowError(f"{where}: missing field '{key}'")
    name = data["name"]
    if not isinstance(name, str) or not name or any(c.isspace() or c in "/\\" for c in name):
        raise TvmflowError(f"{where}: field 'name' must be a non-empty word, got {name!r}")
    lists = {key: _int_list(data[key], key, where) for key in LIST_FIELDS}
    spec = Variant(
        name=name, **lists,
        pool1=_pool(data["pool1"], "pool1", where), pool2=_pool(data["pool2"], "pool2", where),
        description=str(data.get("description", "")),
        num_classes=int(data.get("num_classes", 10)),
        in_channels=int(data.get("in_channels", 3)),
        image_size=int(data.get("image_size", 32)),
        base=data.get("base"), checkpoint=data.get("checkpoint"),
        prune=dict(data.get("prune") or {}), source=data.get("source"))
    _check_geometry(spec, where)
    return spec


def _check_geometry(spec: Variant, where: str) -> None:
    cin = spec.in_channels
    for i, layer in enumerate(LAYER_NAMES):
        cout, g, s, k = spec.channels[i], spec.groups[i], spec.shuffle[i], spec.kernels[i]
        if cout < 1:
            raise TvmflowError(f"{where}: {layer} has {cout} channels; need at least 1")
        if k < 1 or k % 2 == 0:
            raise TvmflowError(f"{where}: {layer} kernel {k} must be odd and positive")
        if g < 1 or cin % g or cout % g:
            raise TvmflowError(f"{where}: {layer} channels not divisible by groups: "
                               f"{cin} in / {cout} out channels with groups={g}")
        if i == 0 and (g != 1 or s):
            raise TvmflowError(f"{where}: conv0 can be neither grouped nor shuffled")
        if s < 0 or (s and cin % s):
            raise TvmflowError(f"{where}: {layer} shuffle of {s} groups doesn't divide its "
                               f"{cin} input channels")
        cin = cout
    size = spec.pool2.out_size(spec.pool1.out_size(spec.image_size))
    if size < 1:
        raise TvmflowError(f"{where}: the pools shrink a {spec.image_size}px input to nothing")
