"""`tvmflow verify`: import through torch.export and ONNX, compile for the host, compare."""

import json

import click

from tvmflow.cli import cli
from tvmflow.cli.options import FRONTEND, NON_NEGATIVE, layout_options, seed_option, threads_option


@cli.command("verify")
@click.option("--variant", "-v", default="all", show_default=True, help="Variant name, comma list or 'all'.")
@click.option("--frontend", type=FRONTEND, default="both", show_default=True)
@seed_option("Seed of the weights, BN statistics and input.")
@click.option("--tolerance", default=1e-4, show_default=True, type=NON_NEGATIVE,
              help="Largest max abs error accepted.")
@threads_option("TVM threads [default: $TVM_NUM_THREADS, else this machine's cores].")
@layout_options("Conv layout of the build [default: the host's for each model: NCHWc "
                "where it runs blocked end to end, else NCHW].",
                "With --layout NCHWc: the blocked convs untuned, or on the fixed rule.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify_cmd(variant: str, frontend: str, seed: int, tolerance: float, threads,
               as_json: bool, layout=None, conv_rule=None) -> None:
    """Check that TVM computes what PyTorch computes (max abs error <= 1e-4)."""
    from tvmflow.errors import TvmflowError
    from tvmflow.ui import console
    from tvmflow.ir.verify import verify
    fes = ("torch", "onnx") if frontend == "both" else (frontend,)
    show = None if as_json else (lambda r: console.print(
        f"{r.variant:14s} {r.frontend:6s} max abs error {r.max_abs_error:.3e}  "
        + ("[green]ok[/green]" if r.passed else "[red]FAIL[/red]")))
    result = verify(variant, fes, seed=seed, tolerance=tolerance, threads=threads,
                    layout=layout, conv_rule=conv_rule, on_row=show)
    if not as_json:
        console.print(f"checked with {result.pipeline}, {result.threads} TVM threads")
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    if not result.passed:
        bad = ", ".join(f"{r.variant}/{r.frontend}" for r in result.rows if not r.passed)
        raise TvmflowError(f"TVM output differs from PyTorch by more than {result.tolerance:g}: {bad}")
