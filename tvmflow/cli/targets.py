"""`tvmflow targets`: the target presets, with what was detected and what is installed."""

import json

import click

from tvmflow.cli import cli


@cli.command("targets")
@click.option("--json", "as_json", is_flag=True, help="Print the presets as JSON.")
def targets_cmd(as_json: bool) -> None:
    """List target presets (targets/*.toml; directories in TVMFLOW_TARGET_PATH come first)."""
    from tvmflow.target.presets import list_presets, toolchain_status
    from tvmflow.ui import err_console, print_table
    presets = [(p, toolchain_status(p)) for p in list_presets(
        on_error=lambda exc: err_console.print(f"Warning: {exc} (left out)", highlight=False,
                                               markup=False, soft_wrap=True))]
    if as_json:
        click.echo(json.dumps([{**p.to_json(), "toolchain": t} for p, t in presets], indent=2))
        return

    def cpu(d):
        return " ".join(str(x) for x in (d.get("mtriple", "x86_64"), d.get("mcpu"),
                                          f"{d['num-cores']} cores" if "num-cores" in d else None) if x)

    def tool(p, t):
        if not p.cross_compiler:
            return "-"
        return p.cross_compiler + ("" if t.get("cross_compiler") else " (missing)")

    print_table("Target presets",
                ["name", "device", "target", "host", "cross compiler", "rpc key", "detected"],
                [[p.name, p.device, f"cuda {p.arch}" if p.is_cuda else cpu(p.target),
                  cpu(p.host) if p.host else "-", tool(p, t), p.rpc_key,
                  ", ".join(f"{k}={v}" for k, v in p.detected.items() if k != "cpu_model") or "-"]
                 for p, t in presets], right=set())
