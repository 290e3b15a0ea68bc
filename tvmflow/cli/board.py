"""`tvmflow board setup|start|stop|status`: the emulated 64-bit ARM board (qemu-user + TVM RPC)."""

import json

import click

from tvmflow.cli import cli


@cli.group("board")
@click.option("--state-dir", type=click.Path(file_okay=False), default=None,
              help="Where the boards' state and logs are kept [default: $TVMFLOW_BOARD_STATE_DIR, "
                   "else ~/.cache/tvmflow/board].")
@click.pass_context
def board_group(ctx: click.Context, state_dir: str | None) -> None:
    """An emulated arm64 board: Debian root under qemu-user serving TVM RPC on 127.0.0.1."""
    ctx.obj = {"state_dir": state_dir}


@board_group.command("setup")
@click.option("--force", is_flag=True, help="Rebuild the root even when the cached one is complete.")
@click.option("--mirror", default=None, help="Debian archive URL (default: the one apt uses here).")
def setup_cmd(force: bool, mirror: str | None) -> None:
    """Build (or reuse) the arm64 Debian root with TVM's aarch64 wheels (~5 min the first time)."""
    from tvmflow.board import setup
    info = setup(force=force, mirror=mirror, say=click.echo)
    m = info.marker
    click.echo(f"{'reused' if info.reused else 'built'} {info.root}: Debian {m.suite} {m.arch}, "
               f"Python {m.python}, TVM {m.tvm} ({info.seconds:.0f} s)")


@board_group.command("start")
@click.option("--tracker", default=None, metavar="HOST:PORT",
              help="Register with this tracker (default: start one on 127.0.0.1).")
@click.option("--key", default="rpi4-emu", show_default=True, help="Device key at the tracker.")
@click.option("--port", type=int, default=None, help="Server port (default: a free one).")
@click.option("--name", default="emu0", show_default=True, help="Board name (several may run).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the server binds.")
@click.option("--threads", type=int, default=None,
              help="TVM threads of the board's server [default: $TVM_NUM_THREADS, else rpi4's "
                   "num-cores, 4].")
@click.pass_obj
def start_cmd(obj: dict, tracker: str | None, key: str, port: int | None, name: str, host: str,
              threads: int | None) -> None:
    """Start a board: `python -m tvm.exec.rpc_server` inside the root, registered under KEY."""
    from tvmflow.board import start
    info = start(name, tracker, key, port=port, host=host, threads=threads,
                 state_dir=obj["state_dir"], say=click.echo)
    click.echo(f"board {info.name}: {info.host}:{info.port} key {info.key} tracker {info.tracker} "
               f"pid {info.pid}, {info.threads} TVM threads")


@board_group.command("stop")
@click.option("--name", default="emu0", show_default=True, help="Board to stop.")
@click.option("--all", "all_", is_flag=True, help="Stop every board (and the tracker start started).")
@click.pass_obj
def stop_cmd(obj: dict, name: str, all_: bool) -> None:
    """Stop a board; the last one also takes its tracker, mounts and leftover processes."""
    from tvmflow.board import stop
    names = stop(name, all=all_, state_dir=obj["state_dir"], say=click.echo)
    click.echo(f"stopped: {', '.join(names) or 'nothing was running'}")


@board_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_obj
def status_cmd(obj: dict, as_json: bool) -> None:
    """What is set up (root, wheels, binfmt) and what runs (boards, tracker, mounts)."""
    from tvmflow.board import status
    from tvmflow.ui import print_table
    st = status(obj["state_dir"])
    if as_json:
        click.echo(json.dumps(st.to_json(), indent=2))
        return
    m = st.setup
    setup = (f"complete: TVM {m.tvm}, Python {m.python}" if m else
             "incomplete" if st.root_present else "not set up")
    click.echo(f"root:     {st.root} ({setup})")
    click.echo(f"wheels:   {len(st.wheels)}; binfmt qemu-aarch64: {st.binfmt}; "
               f"missing tools: {', '.join(st.missing_tools) or 'none'}")
    t = st.tracker
    click.echo(f"tracker:  {t.address} pid {t.pid} ({'alive' if st.tracker_alive else 'dead'})"
               if t else "tracker:  none started by tvmflow")
    click.echo(f"mounts:   {', '.join(st.mounts) or 'none'}; processes in root: "
               f"{len(st.processes)}; state: {st.state_dir}")
    if st.boards:
        print_table("Boards", ["name", "key", "address", "pid", "tracker", "state"],
                    [[b.info.name, b.info.key, f"{b.info.host}:{b.info.port}", b.info.pid,
                      b.info.tracker, ("registered" if b.registered else "running, not registered")
                      if b.alive else "dead"] for b in st.boards], right=set())
