"""Schedule sets per CPU: where they lie, and which one compile uses on this CPU.

``schedules/<target>/<cpu>/<variant>/``: ``<cpu>`` is the target's
:attr:`~tvmflow.target.presets.TargetPreset.cpu_key`: LLVM's name for the CPU
(``schedules/host/znver2/pruned/``; the host preset's is the detected CPU), a fixed target's
mcpu (``schedules/rpi4/cortex-a72/...``), the SM arch for CUDA targets (``schedules/h100/sm_90/...``).

Sets are read from the workspace's ``schedules/`` first, then from the shipped ones; ``tune``
writes into the workspace only (a shipped set of this CPU is copied there first,
:func:`seed_from_shipped`).

:func:`select_set` picks the set tuned on this CPU, else the NEAREST one by
:mod:`tvmflow.target.cpus`' ranking (never one of another architecture, never another CUDA
arch).  Records tuned on another CPU of the same architecture apply as they are:
MetaSchedule's ``Database.query_tuning_record`` matches a record by its workload and ignores
the target (TVM 0.27, ``DatabaseNode::QueryTuningRecord`` takes a target and never reads it),
and ``MetaScheduleApplyDatabase`` replays the record's trace on the module being compiled,
which is then generated for THIS CPU's ``mcpu``.  So a set from another CPU changes which
schedule is used, not which instructions are emitted.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tvmflow.errors import TvmflowError
from tvmflow.tuning.log import DB_RECORDS, LOCK
from tvmflow.tuning.meta import META, ScheduleMeta
from tvmflow.workspace import Workspace, is_shipped, search_dirs

# what a log must share with the target it is applied to (the CPU -- mcpu -- may differ, but
# never its architecture: see target_mismatch)
TARGET_KEYS = ("kind", "mtriple", "arch")
MOVED_ASIDE = ".old-"      # <variant>.old-<timestamp>/: a log that tune --fresh moved aside


def schedules_root() -> Path:
    """Where ``tune`` writes: the workspace's ``schedules/``."""
    return Workspace.current().schedules


def schedule_roots(root: Path | None = None) -> list[Path]:
    """Where logs are read from, first wins: ``root`` alone when given, else the workspace's
    ``schedules/`` and then the shipped sets."""
    if root is not None:
        return [Path(root)]
    return search_dirs("schedules")


def _preset(target):
    if isinstance(target, str):
        from tvmflow.target.presets import get_target
        return get_target(target)
    return target


def cpu_dir(target, cpu: str, root: Path | None = None) -> Path:
    """``<root>/<target>/<cpu>``: the sets tuned on one CPU."""
    name = target if isinstance(target, str) else target.name
    return Path(root or schedules_root()) / name / cpu


def schedule_dir(target, variant: str, root: Path | None = None, *, cpu: str | None = None) -> Path:
    """``<root>/<target>/<cpu>/<variant>``; ``cpu`` defaults to the target's own
    (:attr:`~tvmflow.target.presets.TargetPreset.cpu_key`, the running CPU for ``host``): the log
    ``tvmflow tune`` writes.  ``target``: a preset or its name."""
    if cpu is None:
        cpu = _preset(target).cpu_key
    return cpu_dir(target, cpu, root) / variant


def is_log_dir(d: Path) -> bool:
    return (d / DB_RECORDS).exists() or (d / META).exists()


def cpu_sets(target_name: str, variant: str, root: Path | None = None) -> list[tuple[str, Path]]:
    """``(cpu, log dir)`` of every set of ``variant`` for the target, by CPU name (the
    workspace's set of a CPU hides the shipped one)."""
    found: dict[str, Path] = {}
    for base in schedule_roots(root):
        tdir = base / target_name
        if not tdir.is_dir():
            continue
        for cdir in sorted(p for p in tdir.iterdir() if p.is_dir()):
            if is_log_dir(cdir):        # an old-layout <target>/<variant>/ log, not a CPU
                continue
            if (cdir / variant / DB_RECORDS).exists():
                found.setdefault(cdir.name, cdir / variant)
    return sorted(found.items())


def seed_from_shipped(preset, variant: str, log_dir: Path, options=None) -> Path | None:
    """A tune of a set that tvmflow ships for this CPU, and that the workspace does not have
    yet, resumes from a copy of the shipped set in the workspace (the shipped one is never
    written) -- unless ``options`` asks for another pipeline than the set was tuned with: that
    tune starts a log of its own.  Returns the shipped set copied, or None."""
    if log_dir.exists():
        return None
    shipped = dict(cpu_sets(preset.name, variant)).get(preset.cpu_key)
    if shipped is None or not is_shipped(shipped):
        return None
    if options is not None:
        from tvmflow.adapter.pipeline import PipelineOptions
        meta = ScheduleMeta.read(shipped)
        tuned_with = meta.pipeline if meta is not None else None
        if tuned_with and PipelineOptions.from_json(tuned_with) != \
                options.resolved(preset.tvm_target()):
            return None
    log_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = log_dir.with_name(f".{log_dir.name}.copy")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(shipped, tmp, ignore=shutil.ignore_patterns("logs", LOCK, "*.tmp"))
    os.replace(tmp, log_dir)
    return shipped


def legacy_dir(target_name: str, variant: str, root: Path | None = None) -> Path | None:
    """An old-layout log ``<root>/<target>/<variant>/`` (before logs were kept per CPU)."""
    for base in schedule_roots(root):
        d = base / target_name / variant
        if is_log_dir(d):
            return d
    return None


# --------------------------------------------------------------------------- choosing a set


def _triple_arch(target: dict[str, Any]) -> str:
    arch = str(target.get("mtriple") or "x86_64").split("-")[0].lower()
    return {"arm64": "aarch64", "amd64": "x86_64"}.get(arch, arch)


def target_mismatch(want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """Why records tuned for target ``got`` must not be applied to target ``want``.

    The kind, the triple and the CUDA arch must agree.  The CPU (mcpu) may differ -- the
    traces are replayed and the code generated for ``want``'s mcpu -- but not its
    architecture: an mcpu of another architecture (``cortex-a72`` records in an x86 log) is
    refused too.
    """
    diffs = []
    for k in TARGET_KEYS:
        a, b = want.get(k), got.get(k)
        if k == "mtriple" and not a and not b:
            continue
        if (a or None) != (b or None):
            diffs.append(f"{k} {b!r} (this target: {a!r})")
    mcpu = got.get("mcpu")
    if not diffs and mcpu and want.get("kind") == "llvm":
        from tvmflow.target.cpus import cpu_traits
        arch, here = cpu_traits(str(mcpu)).arch, _triple_arch(want)
        if arch and arch != here:
            diffs.append(f"mcpu {mcpu!r} is an {arch} CPU (this target: {here})")
    return diffs


@dataclass
class SetChoice:
    """Which set compile uses for a target + variant on this CPU."""

    running_on: str                  # the target's CPU here (TargetPreset.cpu_key)
    path: Path | None = None         # None: no usable set
    cpu: str | None = None           # the CPU the set was tuned on
    match: str | None = None         # "exact" | "nearest" | None
    why: str = ""                    # how the two CPUs differ (nearest)
    ranked: list[str] = field(default_factory=list)     # the candidates, nearest first
    skipped: list[str] = field(default_factory=list)    # sets never used, and why
    reason: str | None = None        # why there is none

    @property
    def note(self) -> str | None:
        if self.match != "nearest":
            return None
        return f"tuned on {self.cpu}, running on {self.running_on}"


def _set_meta(path: Path) -> ScheduleMeta:
    try:
        return ScheduleMeta.read(path) or ScheduleMeta()
    except TvmflowError:
        return ScheduleMeta()


def candidates(preset, variant: str, root: Path | None, exclude: str | None):
    """(ranked Candidates, {cpu: path}, skipped reasons) of the sets of other CPUs."""
    from tvmflow.target.cpus import Candidate, cpu_traits, cross_arch, rank
    here = cpu_traits(preset.cpu_key, preset.cpu_isa)
    cands, paths, skipped = [], {}, []
    for cpu, path in cpu_sets(preset.name, variant, root):
        if cpu == exclude:
            continue
        meta = _set_meta(path)
        diffs = target_mismatch(preset.target, meta.target) if meta.target else []
        if diffs:
            skipped.append(f"{cpu}: tuned for another target ({'; '.join(diffs)})")
            continue
        c = Candidate(cpu, int(meta.trials or 0), meta.isa if meta.cpu == cpu else None)
        if cross_arch(here, cpu_traits(c.cpu, c.isa)):
            skipped.append(f"{cpu}: another architecture ({cpu_traits(c.cpu, c.isa).arch}, this "
                           f"target: {here.arch})")
            continue
        cands.append(c)
        paths[cpu] = path
    return rank(here, cands), paths, skipped


def _no_set(choice: SetChoice, preset, variant: str, root: Path | None) -> SetChoice:
    own = schedule_dir(preset, variant, root)
    choice.reason = f"no tuning log at {own}"
    if choice.skipped:
        choice.reason += f" (not usable: {'; '.join(choice.skipped)})"
    old = legacy_dir(preset.name, variant, root)
    if old is not None:
        choice.reason += (f"; the old-layout log {old} is ignored: move it to "
                          f"{cpu_dir(preset, '<cpu>', root)}/{variant}/")
    return choice


def select_set(preset, variant: str, root: Path | None = None) -> SetChoice:
    """The set of ``variant`` compile uses for ``preset`` on this CPU.

    The set tuned on this CPU (``preset.cpu_key``) when there is one; otherwise, for CPU
    targets, the nearest of the other CPUs' sets by :func:`tvmflow.target.cpus.rank` (same vector
    ISA width, then same vendor/family, then closest generation, then most trials).  Sets
    of another architecture or target kind/triple are never candidates; CUDA sets are not
    carried across archs (a schedule's thread and shared-memory sizes are the arch's).
    """
    here = preset.cpu_key
    sets = dict(cpu_sets(preset.name, variant, root))
    choice = SetChoice(running_on=here)
    if here in sets:
        choice.path, choice.cpu, choice.match = sets[here], here, "exact"
        return choice
    if preset.is_cuda:
        others = sorted(sets)
        choice.reason = (f"no tuning log at {schedule_dir(preset, variant, root)}" + (
            f" (sets for {', '.join(others)} exist; CUDA schedules are not carried across "
            "archs)" if others else ""))
        return choice
    ranked, paths, choice.skipped = candidates(preset, variant, root, exclude=here)
    choice.ranked = [c.cpu for c in ranked]
    if not ranked:
        return _no_set(choice, preset, variant, root)
    from tvmflow.target.cpus import cpu_traits, why_near
    best = ranked[0]
    choice.path, choice.cpu, choice.match = paths[best.cpu], best.cpu, "nearest"
    choice.why = why_near(cpu_traits(here, preset.cpu_isa), cpu_traits(best.cpu, best.isa))
    return choice
