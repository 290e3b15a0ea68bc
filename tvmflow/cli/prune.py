"""`tvmflow prune`: network slimming of a checkpoint into a new variant."""

import click

from tvmflow.cli import cli
from tvmflow.cli.options import FRACTION, IN_FILE, OUT_DIR, POSITIVE


@cli.command("prune")
@click.argument("checkpoint", type=IN_FILE, required=False)
@click.option("--variant", "-v", default=None,
              help="A torchvision or entry-point variant to prune with Torch-Pruning (instead "
                   "of a NIN CHECKPOINT).")
@click.option("--importance", type=click.Choice(["magnitude", "bn-scale"]), default="magnitude",
              show_default=True, help="Torch-Pruning: how channels are ranked.")
@click.option("--ratio", type=FRACTION, required=True, help="Fraction of BN channels to prune, in (0, 1).")
@click.option("--align", type=POSITIVE, default=None, help="Round kept channels to multiples of N.")
@click.option("--name", default=None, help="Name of the new variant [default: <base>-slim<R>[-a<N>]].")
@click.option("--base", default="original", show_default=True,
              help="Variant the checkpoint belongs to (its cfg if the checkpoint has none).")
@click.option("-o", "--out-dir", type=OUT_DIR, default=None,
              help="Directory for <name>.toml and <name>.pth [default: the workspace's models/].")
@click.option("--force", is_flag=True, help="Replace existing output files.")
def prune_cmd(checkpoint, ratio, align, name, base, out_dir, force, variant=None,
              importance="magnitude") -> None:
    """Prune a NIN CHECKPOINT by network slimming, or a PyTorch --variant with Torch-Pruning
    (--align N is its round_to), and register the result as a variant."""
    if (checkpoint is None) == (variant is None):
        raise click.UsageError("give either a NIN CHECKPOINT or --variant (a torchvision or "
                               "entry-point model)")
    if variant is not None:
        return _prune_model(variant, ratio, align, name, out_dir, force, importance)
    from tvmflow.spec.prune import prune
    from tvmflow.spec.registry import model_dirs
    from tvmflow.ui import console, print_table
    r = prune(checkpoint, ratio, align=align, name=name, base=base, out_dir=out_dir, force=force)
    rows = [[row["layer"], f"{row['before']} -> {row['after']}"] for row in r.rows()]
    rows += [["params", f"{r.params_before:,} -> {r.params_after:,}"],
             ["conv MACs", f"{r.macs_before:,} -> {r.macs_after:,}"],
             ["|gamma| threshold", f"{r.threshold:.6g}"]]
    print_table(f"{r.name} (ratio {r.ratio:g}, align {r.align})", ["layer", "channels"], rows)
    console.print(f"checkpoint: {r.checkpoint_path}\nvariant:    {r.variant_path}", highlight=False)
    if r.variant_path.parent.resolve() not in [d.resolve() for d in model_dirs()]:
        console.print(f"use it with TVMFLOW_MODEL_PATH={r.variant_path.parent.resolve()}",
                      highlight=False)


def _prune_model(variant, ratio, align, name, out_dir, force, importance) -> None:
    from tvmflow.spec.tp_prune import prune_model
    from tvmflow.ui import console, print_table
    r = prune_model(variant, ratio, align, importance=importance, name=name, out_dir=out_dir,
                    force=force)
    changed = [c for c in r.convs if c["before"] != c["after"]]
    rows = [[c["name"], f"{c['before']} -> {c['after']}"] for c in changed[:12]]
    if len(changed) > 12:
        rows.append([f"... {len(changed) - 12} more convs", ""])
    rows += [["params", f"{r.params_before:,} -> {r.params_after:,}"],
             ["MACs", f"{r.macs_before:,} -> {r.macs_after:,}"]]
    print_table(f"{r.name} (Torch-Pruning, {r.importance}, ratio {r.ratio:g}, round_to {r.align})",
                ["layer", "channels"], rows)
    console.print(f"program: {r.program_path}\nvariant: {r.variant_path}", highlight=False)
