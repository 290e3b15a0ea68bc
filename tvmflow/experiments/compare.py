"""``tvmflow compare``: the interleaved multi-variant experiment, composed from the stages.

:func:`tvmflow.measure.bench.bench` with ``command="compare"`` measures the variants
interleaved in every round (A B C, A B C, ...), so drift of the machine spreads over all of
them; the report (:class:`tvmflow.measure.report.BenchReport`) has the speed-up table and the
alignment line.  ``--per-layer A,B`` adds the layer-by-layer side-by-side of two variants
(:func:`tvmflow.measure.profile.compare_profiles`, on this machine).
"""

from __future__ import annotations

from pathlib import Path

from tvmflow.errors import TvmflowError
from tvmflow.measure.bench import bench
from tvmflow.measure.profile import compare_profiles
from tvmflow.measure.profile_result import write_json
from tvmflow.measure.report import BenchReport
from tvmflow.threads import resolve as resolve_threads

PER_LAYER_ROUNDS = 10


def compare(target: str = "host", variants: list[str] | str = "all", *,
            per_layer: str | list[str] | None = None, pair: str | list[str] | None = None,
            **kwargs) -> BenchReport:
    """``tvmflow compare``: :func:`~tvmflow.measure.bench.bench` with the variants measured
    interleaved in rounds, the speed-up table and the alignment line.

    ``per_layer`` ("A,B", e.g. ``"pruned,pruned-a8"``) adds the layer-by-layer side-by-side of
    two variants, written next to the report as ``per_layer.json`` / ``per_layer.md``.
    ``pair`` ("A,B", e.g. ``"resnet18-p50,resnet18-p50-a8"``): the two compared variants whose
    latency ratio (with its 95 % CI) the report gives; default pruned-a8 / pruned.
    """
    import dataclasses
    from tvmflow.measure.bench import BenchOptions
    from tvmflow.spec.registry import resolve_variants
    from tvmflow.target.presets import get_target
    preset = get_target(target)
    if pair:
        names = _two_names(pair, "--pair", "resnet18-p50,resnet18-p50-a8")
        missing = [n for n in names if n not in resolve_variants(variants)]
        if missing:
            raise TvmflowError(f"--pair names {', '.join(missing)}, which is not among the "
                               "compared variants", hint="add it to -v")
        kwargs["options"] = dataclasses.replace(kwargs.get("options") or BenchOptions(),
                                                pair=tuple(names))
    layer_pair = per_layer_pair(per_layer, preset)
    threads = resolve_threads(preset, kwargs.pop("threads", None))
    report = bench(preset.name, variants, command="compare", threads=threads, **kwargs)
    if layer_pair:
        report.per_layer = compare_profiles(layer_pair, preset, rounds=PER_LAYER_ROUNDS,
                                            seed=kwargs.get("seed", 0), threads=threads)
        out = report.environment.get("output_dir")
        if out:
            write_json(report.per_layer, Path(out) / "per_layer.json")
            (Path(out) / "per_layer.md").write_text(report.per_layer.markdown())
    return report


def per_layer_pair(per_layer: str | list[str] | None, preset) -> list[str] | None:
    """Check ``--per-layer A,B`` before any measuring."""
    if not per_layer:
        return None
    names = _two_names(per_layer, "--per-layer", "pruned,pruned-a8")
    if preset.is_cross:
        raise TvmflowError(f"--per-layer profiles on this machine; target {preset.name} is for "
                           f"{preset.cpu_triple}", hint="use it with --target host")
    return names


def _two_names(value: str | list[str], option: str, example: str) -> list[str]:
    """Two variant names from "A,B" (or a list), each known (suggestions otherwise)."""
    from tvmflow.spec.registry import get_spec
    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else value)
             if v.strip()]
    if len(names) != 2 or names[0] == names[1]:
        raise TvmflowError(f"{option} takes two different variants, e.g. {example}; got {value!r}")
    for n in names:
        get_spec(n)                         # unknown names fail here, with suggestions
    return names
