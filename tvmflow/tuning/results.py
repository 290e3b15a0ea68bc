"""What a tune returns: :class:`TuneResult`, one :class:`TaskResult` per task."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tvmflow.tuning.meta import ScheduleMeta


@dataclass
class TaskResult:
    name: str
    weight: int
    trials: int
    best_ms: float | None

    @property
    def weighted_ms(self) -> float | None:
        return None if self.best_ms is None else self.best_ms * self.weight


@dataclass
class TuneResult:
    variant: str
    target: str
    log_dir: Path
    trials_before: int
    trials_run: int
    trials_total: int
    valid: int
    wall_s: float
    tasks: list[TaskResult] = field(default_factory=list)
    interrupted: bool = False
    skipped: bool = False
    adapted: dict[str, Any] | None = None   # what --adapt re-measured (Adaptation.to_json())
    threads: dict[str, Any] = field(default_factory=dict)  # {"requested": N, "tvm": measured}
    moved_aside: Path | None = None          # where --fresh moved the old log

    @property
    def est_total_ms(self) -> float | None:
        known = [t.weighted_ms for t in self.tasks if t.weighted_ms is not None]
        return sum(known) if known else None

    @property
    def trials_per_min(self) -> float:
        return 60.0 * self.trials_run / self.wall_s if self.wall_s > 0 else 0.0

    def set_tasks(self, meta: ScheduleMeta) -> None:
        """The per-task rows from the log's meta."""
        self.tasks = [TaskResult(n, int(meta.weights.get(n, 0)), int(meta.task_trials.get(n, 0)),
                                 meta.best_ms.get(n) or None) for n in meta.tasks]

    @classmethod
    def skipped_from(cls, variant: str, target: str, log_dir: Path,
                     meta: ScheduleMeta) -> "TuneResult":
        """A tune with nothing left to do: the log as it is."""
        res = cls(variant, target, log_dir, meta.trials, 0, meta.trials, 0, 0.0, skipped=True,
                  threads=dict(meta.threads or {}))
        res.set_tasks(meta)
        return res

    def to_json(self) -> dict[str, Any]:
        return dict(variant=self.variant, target=self.target, log_dir=str(self.log_dir),
                    trials_before=self.trials_before, trials_run=self.trials_run,
                    trials_total=self.trials_total, valid=self.valid, wall_s=self.wall_s,
                    est_total_ms=self.est_total_ms, interrupted=self.interrupted,
                    skipped=self.skipped, adapted=self.adapted, threads=self.threads,
                    moved_aside=None if self.moved_aside is None else str(self.moved_aside),
                    tasks=[dict(name=t.name, weight=t.weight, trials=t.trials, best_ms=t.best_ms)
                           for t in self.tasks])
