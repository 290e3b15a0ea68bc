"""A timm-style registry of model variants.

A variant is data: a TOML file in ``models/`` (or in a directory named by the
``TVMFLOW_MODEL_PATH`` environment variable) holding the per-layer settings of a
Network-in-Network: channels, kernels, groups and channel-shuffle groups for each of the
eight convs, and the two pools.  A file may name a ``base`` variant and override only some
fields; ``tvmflow prune`` writes such files.  Adding a file adds a variant, no code change.

    >>> list_models("pruned*")
    ['pruned', 'pruned-a8']
    >>> spec = get_spec("original", channels=[96] * 8)

:func:`tvmflow.spec.nin.create_model` builds the PyTorch module of a variant.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tvmflow.errors import TvmflowError
from tvmflow.workspace import search_dirs

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
class Variant:
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

    def to_json(self) -> dict[str, Any]:
        """The record as JSON data (:meth:`from_json` reads it back); ``cfg()`` less ``source``."""
        return {**self.cfg(), "source": self.source}

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "variant record") -> "Variant":
        """A Variant from :meth:`to_json`'s data, checked as a variant file is."""
        if not isinstance(data, dict):
            raise TvmflowError(f"{where}: expected a JSON object, got {type(data).__name__}")
        return _build_spec(dict(data), where=where)

    def replace(self, **overrides: Any) -> "Variant":
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data.update(overrides)
        return _build_spec(data, where=f"overrides of {self.name!r}")


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


def load_variant_file(path: Path, *, bases: dict[str, tuple[Path, dict[str, Any]]] | None = None) -> Variant:
    """Parse one variant file (resolving ``base`` against ``bases``: name -> (file, data))."""
    path = Path(path)
    scan = Scan(files={name: [entry] for name, entry in (bases or {}).items()})
    return _spec_from_data(_read_toml(path), path, scan)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise TvmflowError(f"malformed variant file {path}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TvmflowError(f"cannot read variant file {path}: "
                           f"{getattr(exc, 'strerror', None) or exc}") from None


def _spec_from_data(data: dict[str, Any], path: Path, raw: "Scan",
                    seen: tuple[str, ...] = ()) -> Variant:
    merged = dict(data)
    base = data.get("base")
    if base is not None:
        if base in seen or base == data.get("name"):
            raise TvmflowError(f"variant file {path}: field 'base' makes a cycle: "
                               f"{' -> '.join(seen + (base,))}")
        base_path, base_data = _base_entry(raw, base, path)
        parent = _spec_from_data(base_data, base_path, raw, seen + (data.get("name", "?"),))
        merged = {**{k: v for k, v in parent.cfg().items() if k not in ("prune", "checkpoint")},
                  **data}
    checkpoint = merged.get("checkpoint")
    if checkpoint and not os.path.isabs(checkpoint):
        merged["checkpoint"] = str((path.parent / checkpoint).resolve())
    merged["source"] = str(path)
    return _build_spec(merged, where=f"variant file {path}")


def _base_entry(raw: "Scan", base: str, path: Path) -> tuple[Path, dict[str, Any]]:
    try:
        return raw.entry(base)
    except TvmflowError as exc:
        if base not in raw.files and base not in raw.broken:
            raise TvmflowError(f"variant file {path}: field 'base' names unknown variant "
                               f"{base!r}{_suggest(base, raw.files)}") from None
        raise TvmflowError(f"variant file {path}: its base {base!r}: {exc}") from None


def model_dirs() -> list[Path]:
    """Where variant files are looked for, first wins: ``TVMFLOW_MODEL_PATH``, the workspace's
    ``models/``, the shipped variants."""
    return search_dirs("models", "TVMFLOW_MODEL_PATH")


@dataclass
class Scan:
    """Every variant file in :func:`model_dirs`: the names each declares, and the files that
    declare none (malformed TOML, no ``name``), by their file name."""

    files: dict[str, list[tuple[Path, dict[str, Any]]]] = field(default_factory=dict)
    broken: dict[str, tuple[Path, str]] = field(default_factory=dict)   # stem -> (file, error)

    def entry(self, name: str) -> tuple[Path, dict[str, Any]]:
        """The one file declaring ``name``; a duplicate or a malformed file is an error."""
        found = self.files.get(name, [])
        if len(found) > 1:
            raise TvmflowError(f"variant {name!r} is declared by {len(found)} files: "
                               + " and ".join(str(p) for p, _ in found),
                               hint="rename or remove all but one")
        if found:
            return found[0]
        if name in self.broken:
            raise TvmflowError(self.broken[name][1])
        raise TvmflowError(f"unknown variant {name!r}{_suggest(name, self.files)} "
                           f"(known variants: {', '.join(sorted(self.files, key=_order)) or 'none'})")

    def declaring(self, name: str) -> list[Path]:
        """Every file that declares ``name``."""
        return [p for p, _ in self.files.get(name, [])]


def _scan() -> Scan:
    scan = Scan()
    for directory in model_dirs():
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.toml")):
            try:
                data = _read_toml(path)
            except TvmflowError as exc:
                scan.broken.setdefault(path.stem, (path, exc.message))
                continue
            name = data.get("name")
            if not isinstance(name, str) or not name:
                scan.broken.setdefault(path.stem, (path, f"variant file {path}: missing field "
                                                         "'name'"))
                continue
            scan.files.setdefault(name, []).append((path, data))
    return scan


_FIRST = ("original", "grouped", "grouped-wide", "pruned", "pruned-a8")


def _order(name: str) -> tuple[int, str]:  # the five variants first, then by name
    return (_FIRST.index(name) if name in _FIRST else len(_FIRST), name)


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        from tvmflow.ui import warn
        warn(message)


def _suggest(name: str, names) -> str:
    close = difflib.get_close_matches(name, list(names), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(close)}?" if close else ""


def declared_by(name: str) -> list[Path]:
    """The variant files that declare ``name`` (shipped or not)."""
    return _scan().declaring(name)


def list_models(pattern: str = "*") -> list[str]:
    """Names of the usable variants matching a shell-style pattern, in a stable order.

    A file that cannot be used (malformed, a duplicate name, a bad base) is left out with a
    one-line warning: it is an error only for the commands that ask for it."""
    scan = _scan()
    for path, error in scan.broken.values():
        _warn_once(f"{error} (ignored)")
    names = []
    for name in scan.files:
        if not fnmatch.fnmatchcase(name, pattern):
            continue
        try:
            path, data = scan.entry(name)
            _spec_from_data(data, path, scan)
        except TvmflowError as exc:
            _warn_once(f"{exc} (variant {name!r} ignored)")
            continue
        names.append(name)
    return sorted(names, key=_order)


def get_spec(name: str, **overrides: Any) -> Variant:
    """The variant ``name``; an error when it is unknown, declared twice, or its file (or
    its base's) is malformed."""
    scan = _scan()
    path, data = scan.entry(name)
    spec = _spec_from_data(data, path, scan)
    return spec.replace(**overrides) if overrides else spec


def resolve_variants(names: str | list[str] | tuple[str, ...]) -> list[str]:
    """Expand 'all', comma lists and patterns to registered names (validated)."""
    if isinstance(names, str):
        names = [names]
    out: list[str] = []
    for item in names:
        for part in (p.strip() for p in item.split(",")):
            if not part:
                continue
            if part == "all":
                matched = list_models()
            elif any(c in part for c in "*?["):
                matched = list_models(part)
                if not matched:
                    raise TvmflowError(f"no variant matches {part!r}")
            else:
                get_spec(part)  # validates, with suggestions
                matched = [part]
            out.extend(m for m in matched if m not in out)
    if not out:
        raise TvmflowError("no variant given")
    return out


VariantSpec = Variant  # the record's former name

