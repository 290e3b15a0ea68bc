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

import difflib
import fnmatch
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tvmflow.errors import TvmflowError
from tvmflow.spec.sources import SourceVariant, build_source_spec, spec_from_file_data
from tvmflow.workspace import search_dirs
from tvmflow.spec.variant import (LAYER_NAMES, LIST_FIELDS, NUM_CONVS, POOL_KINDS,  # noqa: F401
                                  Pool, Variant, _build_spec)

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
                    seen: tuple[str, ...] = ()) -> "ModelSpec":
    merged = dict(data)
    base = data.get("base")
    if base is not None:
        if base in seen or base == data.get("name"):
            raise TvmflowError(f"variant file {path}: field 'base' makes a cycle: "
                               f"{' -> '.join(seen + (base,))}")
        base_path, base_data = _base_entry(raw, base, path)
        parent = _spec_from_data(base_data, base_path, raw, seen + (data.get("name", "?"),))
        if "model" in data:           # a model of its own: the base is its lineage only
            return spec_from_file_data(data, path)
        merged = {**{k: v for k, v in parent.cfg().items() if k not in ("prune", "checkpoint")},
                  **data}
        if isinstance(parent, SourceVariant):
            merged["source"] = str(path)
            if merged.get("checkpoint") and not os.path.isabs(merged["checkpoint"]):
                merged["checkpoint"] = str((path.parent / merged["checkpoint"]).resolve())
            return build_source_spec(merged, where=f"variant file {path}")
    elif "model" in data:
        return spec_from_file_data(data, path)
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


def get_spec(name: str, **overrides: Any) -> "ModelSpec":
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

ModelSpec = Variant | SourceVariant     # a NIN variant, or a model from a file, entry point
MODEL_SPECS = (Variant, SourceVariant)  # or torchvision (for isinstance)

