"""What the two spec records (:class:`~tvmflow.spec.variant.Variant` and
:class:`~tvmflow.spec.sources.SourceVariant`) share: JSON in and out, and overrides, each
checked by the record's own builder (``_build(data, where)``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from tvmflow.errors import TvmflowError


class SpecRecord:
    """Mixin for a frozen dataclass with ``cfg()``, ``name``, ``source`` and ``_build``."""

    def to_json(self) -> dict[str, Any]:
        """The record as JSON data (:meth:`from_json` reads it back); ``cfg()`` and ``source``."""
        return {**self.cfg(), "source": self.source}

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "variant record"):
        """A record from :meth:`to_json`'s data, checked as a variant file is."""
        if not isinstance(data, dict):
            raise TvmflowError(f"{where}: expected a JSON object, got {type(data).__name__}")
        return cls._build(dict(data), where)

    def replace(self, **overrides: Any):
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data.update(overrides)
        return self._build(data, f"overrides of {self.name!r}")
