"""`tvmflow compile` (variant + target -> .so + sidecar) and `tvmflow run` (run a .so here)."""

import click

from tvmflow.cli import cli
from tvmflow.cli.options import IN_FILE, OUT_FILE, seed_option, threads_option


@cli.command("compile")
@click.option("--target", "-t", required=True, help="Target preset (tvmflow targets).")
@click.option("--variant", "-v", required=True, help="Variant name (tvmflow models).")
@click.option("--output", "-o", default=None, help="Output .so path or directory [artifacts/<target>/<variant>.so].")
@seed_option("Seed of the random weights and example input.")
@click.option("--no-schedules", is_flag=True, help="Ignore tuned schedules; default schedules only.")
@click.option("--force", is_flag=True, help="Recompile even when the module is up to date, and "
              "replace a .so/.json at the output path that tvmflow did not write.")
@click.option("--cuda-graph", is_flag=True,
              help="CUDA targets: capture the model's kernel launches into one CUDA graph at "
                   "the first run and replay it (recorded in the sidecar).")
def compile_cmd(target: str, variant: str, output, seed: int, no_schedules: bool, force: bool,
                cuda_graph: bool = False) -> None:
    """Compile a variant into a deployable .so with a JSON sidecar next to it.

    An existing module at the output path is reused when it is up to date (same variant cfg,
    target preset, schedule database, seed and tvmflow version, sha256 intact).
    """
    from tvmflow.artifact.compile import compile_if_stale
    from tvmflow.ui import console
    pkg, why = compile_if_stale(variant, target, output, seed=seed, schedules=not no_schedules,
                                force=force, cuda_graph=cuda_graph,
                                on_status=lambda m: console.print(m, highlight=False))
    if why is None:
        console.print("up to date (--force recompiles)")
    else:
        console.print(f"compiled because: {why}", highlight=False)
    s = pkg.summary()
    cov = s["coverage"]
    console.print(f"{'reused' if why is None else 'compiled'} {s['variant']} for {s['target']} -> {s['module']} "
                  f"({pkg.sidecar.module.bytes / 1024:.0f} KiB, sha256 {s['sha256'][:12]})",
                  highlight=False)
    if cov.get("tasks") is not None:
        console.print(f"tasks: {cov['tasks']}, tuned {cov['tuned']}, default schedules {cov['default']}")
    if s["cuda"]:
        c = s["cuda"]
        console.print(f"CUDA code: {c['code']} (SASS) for {', '.join(c['archs'])}, compiled by nvcc "
                      f"{c['nvcc_version']}; no CUDA source or PTX in the module"
                      + ("; kernels replayed as a CUDA graph" if c.get("cuda_graph") else ""),
                      highlight=False)
    console.print(f"sidecar: {pkg.sidecar_path}", highlight=False)


@cli.command("run")
@click.option("--module", "-m", "module", type=IN_FILE, required=True,
              help="A .so written by tvmflow compile.")
@click.option("--input", "-i", "input_path", type=IN_FILE, default=None,
              help="Input .npy [the seeded example input].")
@click.option("--output", "-o", type=OUT_FILE, default=None, help="Save the output as .npy.")
@click.option("--force", is_flag=True, help="Replace the --output file if it exists.")
@threads_option("TVM threads [default: $TVM_NUM_THREADS, else the target's num-cores].")
def run_cmd(module: str, input_path, output, threads, force: bool = False) -> None:
    """Run a compiled module once on this machine (refused when its target does not match)."""
    from tvmflow.runtime.run import run
    from tvmflow.ui import console
    res = run(module, input_path, output, threads=threads, force=force)
    console.print(f"{res.package.variant} ({res.package.target_name}) on {res.input_source}: "
                  f"output {tuple(res.output.shape)}, {res.threads} TVM thread"
                  f"{'s' if res.threads != 1 else ''}", highlight=False)
    if res.saved:
        console.print(f"saved {res.saved}", highlight=False)
    else:
        console.print("top classes: " + ", ".join(f"{i}: {v:.4f}" for i, v in res.top()))
