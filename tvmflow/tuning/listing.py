"""``tvmflow schedules``: every log in the workspace and the shipped sets, and which one
compile uses on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tvmflow.errors import TvmflowError
from tvmflow.tuning import log as L
from tvmflow.tuning.meta import ScheduleMeta
from tvmflow.tuning.sets import MOVED_ASIDE, is_log_dir, schedule_roots, select_set
from tvmflow.workspace import is_shipped


def _row(target: str, cpu: str | None, vdir: Path) -> dict[str, Any]:
    try:
        meta = ScheduleMeta.read(vdir) or ScheduleMeta()
    except TvmflowError:
        meta = ScheduleMeta()
    integ = L.check(vdir)
    return {"target": target, "cpu": cpu, "variant": vdir.name, "path": str(vdir),
            "trials": meta.trials, "records": integ.records,
            "workloads": integ.workloads, "mcpu": meta.mcpu, "updated": meta.updated,
            "est_latency_ms": meta.est_total_ms,
            "tasks": meta.n_tasks, "tuned_tasks": meta.n_tuned_tasks,
            "adapted_from": [a.cpu for a in meta.adapted_from],
            "integrity": integ.describe()}


def list_schedules(root: Path | None = None, *, here: bool = False) -> list[dict[str, Any]]:
    """Every ``<target>/<cpu>/<variant>`` log under the schedules roots (JSON rows).

    Each row names its ``cpu`` and ``source`` (workspace or shipped); an old-layout
    ``<target>/<variant>/`` log is listed with ``cpu`` None and ``"layout": "old"`` (compile
    ignores it).  Logs moved aside by ``tune --fresh`` are not listed.  With ``here``, rows
    also say what compile on this machine does with them: ``"used_here"`` is ``"exact"``,
    ``"nearest"`` or None, and ``"running_on"`` is the target's CPU here.
    """
    out = []
    for base in schedule_roots(root):
        if base.is_dir():
            out += _rows_under(base)
    if here:
        _mark_used_here(out, root)
    return out


def _rows_under(base: Path) -> list[dict[str, Any]]:
    source = "shipped" if is_shipped(base) else "workspace"
    out = []
    for tdir in sorted(p for p in base.iterdir() if p.is_dir()):
        for cdir in sorted(p for p in tdir.iterdir() if p.is_dir()):
            if is_log_dir(cdir):
                row = _row(tdir.name, None, cdir)
                row["layout"] = "old"
                row["integrity"] += (f"; old layout: move it to {tdir.name}/<cpu>/{cdir.name}/ "
                                     "(compile ignores it)")
                out.append({**row, "source": source})
                continue
            for vdir in sorted(p for p in cdir.iterdir() if p.is_dir()):
                if is_log_dir(vdir) and MOVED_ASIDE not in vdir.name:
                    out.append({**_row(tdir.name, cdir.name, vdir), "source": source})
    return out


def _mark_used_here(rows: list[dict[str, Any]], root: Path | None) -> None:
    from tvmflow.target.presets import get_target
    presets: dict[str, Any] = {}
    for row in rows:
        row.setdefault("used_here", None)
        name = row["target"]
        if name not in presets:
            try:
                presets[name] = get_target(name)
            except TvmflowError:
                presets[name] = None
        preset = presets[name]
        if preset is None or row["cpu"] is None:
            continue
        row["running_on"] = preset.cpu_key
        try:
            choice = select_set(preset, row["variant"], root)
        except TvmflowError:
            continue
        if choice.path is not None and Path(choice.path) == Path(row["path"]):
            row["used_here"] = choice.match


def _repair_all(root: Path | None, quiet: bool) -> None:
    for row in list_schedules(root):
        if row.get("source") == "shipped":
            continue                      # shipped logs are read-only (and checked in CI)
        before = L.repair(Path(row["path"]))
        if not before.ok and not quiet:
            from tvmflow.ui import console
            console.print(f"repaired {row['path']}: dropped {before.describe()}")


def _used(r: dict[str, Any]) -> str:
    if r.get("used_here") == "exact":
        return "yes"
    if r.get("used_here") == "nearest":
        return f"nearest for {r.get('running_on')}"
    return "-"


def list_schedules_report(repair: bool = False, as_json: bool = False,
                          root: Path | None = None) -> list[dict[str, Any]]:
    """``tvmflow schedules``: optionally repair every workspace log, then list (a table
    unless ``as_json``).  The rows say which CPU each set was tuned on and which set compile
    uses here."""
    if repair:
        _repair_all(root, as_json)
    rows = list_schedules(root, here=True)
    if not as_json:
        from tvmflow.ui import print_table
        where = ", ".join(str(r) for r in schedule_roots(root))
        print_table(f"tuning logs in {where}",
                    ["source", "target", "cpu", "variant", "trials", "records", "tasks tuned",
                     "est. ms", "used here", "updated", "integrity"],
                    [[r.get("source", "-"), r["target"], r["cpu"] or "-", r["variant"],
                      r["trials"], r["records"], f"{r['tuned_tasks'] or 0}/{r['tasks'] or '?'}",
                      "-" if r["est_latency_ms"] is None else f"{r['est_latency_ms']:.3f}",
                      _used(r), r["updated"] or "-", r["integrity"]] for r in rows])
    return rows
