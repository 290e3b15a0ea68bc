"""A compiled module and its sidecar: what was built, from what, for which target.

``tvmflow compile`` writes ``NAME.so`` and ``NAME.json`` side by side; the sidecar is a
:class:`~tvmflow.artifact.sidecar.Sidecar`.  :meth:`Package.load` checks that the ``.so`` is
the one the sidecar describes; :func:`owned_by_tvmflow` says whether a ``.so`` (and its
``.json``) at a path are tvmflow's, which compile may overwrite without ``--force``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tvmflow.artifact.sidecar import CudaPart, Sidecar
from tvmflow.errors import TvmflowError
from tvmflow.files import sha256_file, write_atomic


def sidecar_path(so_path: str | Path) -> Path:
    """``x.so`` -> ``x.json``."""
    return Path(so_path).with_suffix(".json")


def tvmflow_version() -> str:
    """tvmflow's version (:mod:`tvmflow._version`), with or without install metadata."""
    from tvmflow._version import __version__
    return __version__


@dataclass
class Package:
    """A compiled ``.so`` with its sidecar."""

    path: Path
    sidecar: Sidecar

    @property
    def sidecar_path(self) -> Path:
        return sidecar_path(self.path)

    @property
    def variant(self) -> str:
        return self.sidecar.variant.name

    @property
    def target_name(self) -> str:
        return self.sidecar.target.name

    @property
    def device(self) -> str:
        return self.sidecar.target.device

    @property
    def sha256(self) -> str:
        return self.sidecar.module.sha256

    @property
    def seed(self) -> int:
        return int(self.sidecar.input.seed)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.sidecar.input.shape)

    @property
    def input_dtype(self) -> str:
        return self.sidecar.input.dtype

    @property
    def cpu_triple(self) -> str:
        return self.sidecar.target.cpu_triple

    @property
    def cuda(self) -> CudaPart | None:
        return self.sidecar.cuda

    @property
    def cuda_graph(self) -> bool:
        """Whether the module replays its kernels as a CUDA graph (``compile --cuda-graph``)."""
        return bool(self.cuda and self.cuda.cuda_graph)

    def write_sidecar(self) -> None:
        write_atomic(self.sidecar_path, self.sidecar.dumps().encode())

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
        pkg = cls(path, read_sidecar(side))
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
                    sha256=self.sha256, schedules=s.schedules.to_json() if s.schedules else None,
                    coverage=s.coverage.summary(), cuda=self.cuda.to_json() if self.cuda else None)


def read_sidecar(side: Path) -> Sidecar:
    """The Sidecar in ``side``; a TvmflowError naming the problem when it is not one."""
    try:
        return Sidecar.loads(side.read_text())
    except (ValueError, OSError) as exc:
        raise TvmflowError(f"sidecar {side} is unreadable: {exc}", hint="recompile the module") from None


def owned_by_tvmflow(so_path: str | Path) -> tuple[bool, str]:
    """Whether the files at ``so_path`` (``.so`` and ``.json``) are tvmflow's to replace, and why
    not.  They are when neither exists, or the ``.json`` is a tvmflow sidecar and the ``.so``
    is missing or is the very module it describes (same sha256)."""
    so, side = Path(so_path), sidecar_path(so_path)
    if not side.exists():
        if so.exists():
            return False, f"it has no sidecar {side.name}: tvmflow did not write it"
        return True, ""
    try:
        sidecar = Sidecar.loads(side.read_text())
    except (ValueError, OSError, UnicodeDecodeError):
        return False, f"{side.name} is not a tvmflow sidecar"
    if so.exists() and (not so.is_file() or sha256_file(so) != sidecar.module.sha256):
        return False, f"it is not the module its sidecar {side.name} describes (changed since)"
    return True, ""
