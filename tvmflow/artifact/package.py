"""A compiled module and its JSON sidecar: what was built, from what, for which target.

``tvmflow compile`` writes ``NAME.so`` and ``NAME.json`` side by side.  The sidecar records
the variant and its configuration, the weights, the target (with what was detected), the
input, the tool versions, the schedule database applied (path + sha256) and how many tasks it
covered, the module's sha256 and, for CUDA, the kind of device code (cubin + SM arch).

:meth:`Package.load` checks that the ``.so`` is the one the sidecar describes;
:func:`stale_reason` says why a package no longer matches what a fresh compile would build.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tvmflow.errors import TvmflowError

SIDECAR_FORMAT = 1


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sidecar_path(so_path: str | Path) -> Path:
    """``x.so`` -> ``x.json``."""
    return Path(so_path).with_suffix(".json")


def tvmflow_version() -> str:
    """tvmflow's version (:mod:`tvmflow._version`), with or without install metadata."""
    from tvmflow._version import __version__
    return __version__


def umask_mode(mode: int) -> int:
    """``mode`` less the process umask (what ``open()`` would give; mkstemp gives 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to a temp file in ``path``'s directory, then rename it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, umask_mode(mode))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class Package:
    """A compiled ``.so`` with its sidecar dict."""

    path: Path
    sidecar: dict[str, Any]

    @property
    def sidecar_path(self) -> Path:
        return sidecar_path(self.path)

    @property
    def variant(self) -> str:
        return self.sidecar["variant"]["name"]

    @property
    def target_name(self) -> str:
        return self.sidecar["target"]["name"]

    @property
    def device(self) -> str:
        return self.sidecar["target"]["device"]

    @property
    def sha256(self) -> str:
        return self.sidecar["module"]["sha256"]

    @property
    def seed(self) -> int:
        return int(self.sidecar["input"]["seed"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.sidecar["input"]["shape"])

    @property
    def input_dtype(self) -> str:
        return self.sidecar["input"]["dtype"]

    @property
    def cpu_triple(self) -> str:
        t = self.sidecar["target"]
        cpu = t.get("host") if t["device"] == "cuda" else t.get("target")
        return (cpu or {}).get("mtriple") or "x86_64-linux-gnu"

    @property
    def cuda(self) -> dict[str, Any] | None:
        return self.sidecar.get("cuda")

    @property
    def cuda_graph(self) -> bool:
        """Whether the module replays its kernels as a CUDA graph (``compile --cuda-graph``)."""
        return bool((self.cuda or {}).get("cuda_graph"))

    def write_sidecar(self) -> None:
        text = json.dumps(self.sidecar, indent=2, sort_keys=False) + "\n"
        write_atomic(self.sidecar_path, text.encode())

    @classmethod
    def load(cls, path: str | Path, *, check: bool = True) -> "Package":
        """Read ``path``'s sidecar; with ``check``, the ``.so`` must exist and match its sha256."""
        path = Path(path)
        if path.suffix == ".json":
            path = path.with_suffix(".so")
        side = sidecar_path(path)
        if not side.is_file():
            if not path.exists():
                raise TvmflowError(f"module {path} does not exist",
                                   hint="compile it with tvmflow compile --target T --variant V")
            raise TvmflowError(f"module {path} has no sidecar {side.name}; it was not written by "
                               "tvmflow compile", hint="recompile it")
        try:
            data = json.loads(side.read_text())
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            for key in ("variant", "target", "input", "module"):
                if key not in data:
                    raise ValueError(f"missing key {key!r}")
        except (ValueError, OSError) as exc:
            raise TvmflowError(f"sidecar {side} is unreadable: {exc}", hint="recompile the module") from None
        pkg = cls(path, data)
        if check:
            if not path.is_file():
                raise TvmflowError(f"module {path} is missing (its sidecar {side.name} exists)",
                                   hint="recompile it")
            actual = sha256_file(path)
            if actual != pkg.sha256:
                raise TvmflowError(f"module {path} does not match its sidecar (sha256 {actual[:12]} != "
                                   f"{pkg.sha256[:12]}); it was changed after compiling",
                                   hint="recompile it")
        return pkg

    def summary(self) -> dict[str, Any]:
        s = self.sidecar
        return dict(module=str(self.path), variant=self.variant, target=self.target_name,
                    sha256=self.sha256, schedules=s.get("schedules"),
                    coverage={k: v for k, v in (s.get("coverage") or {}).items()
                              if not k.endswith("_names")},
                    cuda=self.cuda)


def stale_reason(path: str | Path, *, schedules_info: dict | None | bool = True,
                 spec=None) -> str | None:
    """Why the package at ``path`` is not what a fresh compile would produce, or None.

    Checked: module or sidecar missing, sha256 mismatch, tvmflow version, the variant's cfg
    (``spec`` or the registry's current spec), the target preset as it loads now, and the
    schedule database a compile would apply (``schedules_info``: the ``info`` dict of
    ``tvmflow.tuning.schedules.load_for_compile``, None for "no database", or True to look it up).
    """
    try:
        pkg = Package.load(path)
    except TvmflowError as exc:
        return str(exc)
    side = pkg.sidecar
    if side.get("versions", {}).get("tvmflow") != tvmflow_version():
        return (f"compiled by tvmflow {side.get('versions', {}).get('tvmflow')}, "
                f"this is tvmflow {tvmflow_version()}")
    if spec is None:
        from tvmflow.spec.registry import get_spec
        try:
            spec = get_spec(pkg.variant)
        except TvmflowError as exc:
            return f"variant {pkg.variant}: {exc}"
    if _jsonable(spec.cfg()) != side["variant"].get("cfg"):
        return f"variant {pkg.variant} changed since it was compiled"
    from tvmflow.target.presets import get_target
    try:
        preset = get_target(pkg.target_name)
    except TvmflowError as exc:
        return f"target {pkg.target_name}: {exc}"
    if _jsonable(preset.target) != side["target"].get("target") or \
            _jsonable(preset.host) != side["target"].get("host"):
        return f"target preset {pkg.target_name} changed since it was compiled"
    if schedules_info is True:
        from tvmflow.artifact.compile import schedule_database
        try:
            _, schedules_info = schedule_database(preset, pkg.variant, load=False)
        except TvmflowError as exc:
            return f"schedule database: {exc}"
    fresh = schedule_record(schedules_info)
    old = side.get("schedules")
    if (fresh or {}).get("sha256") != (old or {}).get("sha256"):
        was = old["sha256"][:12] if old else "none"
        now = fresh["sha256"][:12] if fresh else "none"
        return f"schedule database changed (compiled with {was}, now {now})"
    if fresh and old and (fresh.get("cpu"), fresh.get("running_on")) != (old.get("cpu"),
                                                                          old.get("running_on")):
        return (f"schedule set changed (compiled with the set tuned on {old.get('cpu') or '?'}, "
                f"now the one tuned on {fresh.get('cpu') or '?'})")
    return None


def is_stale(path: str | Path, **kwargs) -> bool:
    return stale_reason(path, **kwargs) is not None


def schedule_record(info: dict | None) -> dict | None:
    """The sidecar's ``schedules`` entry from a schedules info dict (None: no database)."""
    if not info or not info.get("sha256"):
        return None
    keep = ("path", "sha256", "trials", "records", "target", "variant", "mcpu", "pipeline",
            "tvm_version", "cpu", "running_on", "match", "note", "dry_run")
    return {k: _jsonable(info[k]) for k in keep if k in info}


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples -> lists, paths -> str)."""
    return json.loads(json.dumps(value, default=str))
