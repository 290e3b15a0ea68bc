"""Every bad input gets one clear line and exit 2: never a traceback, never silent acceptance.

A table of (argv, a fragment of the expected error) run through the real CLI in this process
(``tvmflow.cli.main``), each row checking the exit code, that the message is one ``Error:``
line on stderr naming the problem, and that no traceback appears.  Placeholders in braces are
paths made per test: ``{missing}`` (does not exist), ``{dir}`` (a directory), ``{file}`` (a
file of junk), ``{empty_pth}`` (an empty checkpoint), ``{unwritable}`` (a path no one can
create).  A few rows run as a subprocess (``python -m tvmflow``) for the whole way out.

A click usage error prints ``Usage: ...`` and ``Try '... -h' for help.`` above its one
``Error:`` line; that is kept (the usage line helps), so the check is: exactly one line starts
with ``Error:``, it is the last line, and it holds the fragment.  Every row runs with the model
import replaced by a failure, so a bad input that gets through fails fast instead of compiling.

Rows are grouped by what decides them: ``STATIC`` rows are click types (nothing is loaded),
``LIBRARY`` rows are TvmflowErrors of the library functions (a preset or variant is loaded,
TVM imported, nothing compiled or measured).
"""

from __future__ import annotations

import pytest

from tvmflow.cli import main

# a preset whose mcpu LLVM does not know (written per test into TVMFLOW_TARGET_PATH)
BAD_CPU_PRESET = """\
name = "badcpu"
description = "an rpi4 with a typo in its CPU"
device = "cpu"
rpc_key = "badcpu"
target = { kind = "llvm", mtriple = "aarch64-linux-gnu", mcpu = "cortex-a27", num-cores = 4 }
"""

RANGE = "is not in the range"

# (argv, fragment of the one-line error): decided by click before anything loads
STATIC = [
    # global
    (["--workspace", "{file}", "models"], "is a file"),
    (["nosuchcommand"], "No such command 'nosuchcommand'"),
    # prune
    (["prune", "{missing}", "--ratio", "0.5"], "does not exist"),
    (["prune", "{dir}", "--ratio", "0.5"], "is a directory"),
    (["prune", "{file}"], "Missing option '--ratio'"),
    (["prune", "{file}", "--ratio", "0"], RANGE),
    (["prune", "{file}", "--ratio", "1"], RANGE),
    (["prune", "{file}", "--ratio", "1.5"], RANGE),
    (["prune", "{file}", "--ratio", "half"], "'half' is not a valid float."),
    (["prune", "{file}", "--ratio", "nan"], "'nan' is not a finite number"),
    (["prune", "{file}", "--ratio", "0.5", "--align", "0"], RANGE),
    (["prune", "{file}", "--ratio", "0.5", "-o", "{file}"], "is a file"),
    # verify
    (["verify", "--tolerance", "-1"], "'--tolerance': -1.0 is not in the range x>=0"),
    (["verify", "--tolerance", "nan"], "'nan' is not a finite number"),
    (["verify", "--tolerance", "inf"], "'inf' is not a finite number"),
    (["verify", "--tolerance", "tiny"], "'tiny' is not a valid float."),
    (["verify", "--threads", "0"], "'--threads': 0 is not in the range x>=1"),
    (["verify", "--seed", "-1"], "'--seed': -1 is not in the range"),
    (["verify", "--seed", "4294967296"], "'--seed': 4294967296 is not in the range"),
    (["verify", "--frontend", "tflite"], "'tflite' is not one of 'torch', 'onnx', 'both'"),
    (["verify", "--layout", "nchw"], "'nchw' is not one of 'NCHW', 'NHWC', 'NCHWc'"),
    (["verify", "--conv-rule", "neocpu"], "'neocpu' is not one of 'search', 'fixed'"),
    # compile / run
    (["compile", "-v", "pruned"], "Missing option '--target'"),
    (["compile", "-t", "host"], "Missing option '--variant'"),
    (["compile", "-t", "host", "-v", "pruned", "--seed", "abc"], "'abc' is not a valid integer."),
    (["run"], "Missing option '--module'"),
    (["run", "-m", "{missing}"], "does not exist"),
    (["run", "-m", "{dir}"], "is a directory"),
    (["run", "-m", "{file}", "-i", "{missing}"], "does not exist"),
    (["run", "-m", "{file}", "-i", "{dir}"], "is a directory"),
    (["run", "-m", "{file}", "-o", "{dir}"], "is a directory"),
    (["run", "-m", "{file}", "--threads", "0"], "'--threads': 0 is not in the range x>=1"),
    # tune
    (["tune", "--trials", "0"], "'--trials': 0 is not in the range x>=1"),
    (["tune", "--trials", "many"], "'many' is not a valid integer."),
    (["tune", "--trials-per-task", "0"], "'--trials-per-task': 0 is not in the range x>=1"),
    (["tune", "--per-round", "0"], "'--per-round': 0 is not in the range x>=1"),
    (["tune", "--population", "4"], "'--population': 4 is not in the range x>=8"),
    (["tune", "--population", "many"], "'--population': 'many' is not a valid integer"),
    (["tune", "--keep-best", "0"], "'--keep-best': 0 is not in the range x>=1"),
    (["tune", "--workers", "0"], "'--workers': 0 is not in the range x>=1"),
    (["tune", "--rpc-workers", "0"], "'--rpc-workers': 0 is not in the range x>=1"),
    (["tune", "--threads", "-2"], "'--threads': -2 is not in the range x>=1"),
    (["tune", "--seed", "-1"], "'--seed': -1 is not in the range"),
    (["tune", "--layout", "NCHW4c"], "'NCHW4c' is not one of 'NCHW', 'NHWC', 'NCHWc'"),
    (["tune", "--conv-rule", "best"], "'best' is not one of 'search', 'fixed'"),
    (["tune", "--no-pad"], "--no-pad needs --layout NCHWc"),
    (["tune", "--no-pad", "--layout", "NCHW"], "--no-pad needs --layout NCHWc, not NCHW"),
    (["tune", "--conv-rule", "fixed"], "--conv-rule needs --layout NCHWc"),
    (["tune", "--conv-rule", "search", "--layout", "NHWC"],
     "--conv-rule needs --layout NCHWc, not NHWC"),
    (["tune", "--adapt="], "'--adapt': give a CPU name, or --adapt alone for the nearest set"),
    # bench / compare
    (["bench", "--rounds", "0"], "'--rounds': 0 is not in the range x>=1"),
    (["bench", "--warmup", "-1"], "'--warmup': -1 is not in the range x>=0"),
    (["bench", "--min-repeats", "0"], "'--min-repeats': 0 is not in the range x>=1"),
    (["bench", "--min-time", "-1"], "'--min-time': -1.0 is not in the range x>=0"),
    (["bench", "--max-time", "-1"], "'--max-time': -1.0 is not in the range x>=0"),
    (["bench", "--timeout", "0"], "'--timeout': 0.0 is not in the range x>0"),
    (["bench", "--timeout", "inf"], "'inf' is not a finite number"),
    (["bench", "--boards", "0"], "'--boards': 0 is not in the range x>=1"),
    (["bench", "--threads", "0"], "'--threads': 0 is not in the range x>=1"),
    (["bench", "--seed", "-5"], "'--seed': -5 is not in the range"),
    (["bench", "--via", "tcp"], "'tcp' is not one of 'local', 'rpc'"),
    (["bench", "-o", "{file}"], "is a file"),
    (["compare", "--boards", "2"], "--boards is for bench"),
    (["compare", "--rounds", "0"], "'--rounds': 0 is not in the range x>=1"),
    # sweep / profile
    (["sweep", "--trials", "-1"], "'--trials': -1 is not in the range x>=0"),
    (["sweep", "--per-round", "0"], "'--per-round': 0 is not in the range x>=1"),
    (["sweep", "--rounds", "0"], "'--rounds': 0 is not in the range x>=1"),
    (["sweep", "--repeat", "0"], "'--repeat': 0 is not in the range x>=1"),
    (["sweep", "--threads", "0"], "'--threads': 0 is not in the range x>=1"),
    (["sweep", "--via", "ssh"], "'ssh' is not one of 'local', 'rpc'"),
    (["sweep", "--ratio", "1.5"], "'--ratio': 1.5 is not in the range 0.0<x<1.0"),
    (["sweep", "--importance", "taylor"], "'taylor' is not one of 'magnitude', 'bn-scale'"),
    (["sweep", "--models-dir", "{file}"], "is a file"),
    (["sweep", "-o", "{file}"], "is a file"),
    (["profile"], "Missing option '--variant'"),
    (["profile", "-v", "pruned", "--rounds", "0"], "'--rounds': 0 is not in the range x>=1"),
    (["profile", "-v", "pruned", "--min-ms", "-1"], "'--min-ms': -1.0 is not in the range x>=0"),
    (["profile", "-v", "pruned", "--min-ms", "nan"], "'nan' is not a finite number"),
    (["profile", "-v", "pruned", "--threads", "0"], "'--threads': 0 is not in the range x>=1"),
    (["profile", "-v", "pruned", "-o", "{dir}"], "is a directory"),
    (["profile", "-v", "pruned", "--against", "pruned"], "--against names the variant itself"),
    # outputs that cannot be written: refused before the work
    (["bench", "-o", "{unwritable}/report"], "cannot write into '/proc'"),
    (["compare", "-o", "{file}/report"], "junk.so' is not a directory"),
    (["sweep", "-o", "{unwritable}"], "cannot write into '/proc'"),
    (["sweep", "--models-dir", "{unwritable}/models"], "cannot write into '/proc'"),
    (["profile", "-v", "pruned", "-o", "{unwritable}/p.json"], "cannot write into '/proc'"),
    (["run", "-m", "{file}", "-o", "{unwritable}/out.npy"], "cannot write into '/proc'"),
    (["prune", "{file}", "--ratio", "0.5", "-o", "{unwritable}/models"], "cannot write into '/proc'"),
]

# (argv, fragment): TvmflowErrors of the library functions, before any compile or measurement
LIBRARY = [
    # names
    (["models", "pruned-a9"], "unknown variant 'pruned-a9'; did you mean pruned-a8"),
    (["models", "zz*"], "no variant matches 'zz*'"),
    (["compile", "-t", "rpi", "-v", "pruned"], "unknown target 'rpi'; did you mean rpi4"),
    (["compile", "-t", "host", "-v", "prunned"], "unknown variant 'prunned'; did you mean pruned"),
    (["compile", "-t", "badcpu", "-v", "pruned"],
     "LLVM knows no CPU 'cortex-a27' for aarch64-linux-gnu; did you mean"),
    (["compile", "-t", "host", "-v", "pruned", "--cuda-graph"], "--cuda-graph needs a CUDA target"),
    (["compile", "-t", "host", "-v", "pruned", "-o", "{dir}/model.txt"], "must end in .so"),
    (["compile", "-t", "host", "-v", "pruned", "-o", "{unwritable}/m.so"],
     "cannot create output directory"),
    (["run", "-m", "{file}"], "{file}"),
    # verify
    (["verify", "--conv-rule", "fixed"], "--conv-rule needs --layout NCHWc"),
    (["verify", "--conv-rule", "fixed", "--layout", "NCHW"], "--conv-rule needs --layout NCHWc, not NCHW"),
    (["verify", "-v", "nosuch"], "unknown variant 'nosuch'"),
    # prune
    (["prune", "{file}", "--ratio", "0.5", "--base", "nosuch"], "unknown variant 'nosuch'"),
    (["prune", "{file}", "--ratio", "0.5", "--name", "bad name"], "bad --name 'bad name'"),
    (["prune", "{file}", "--ratio", "0.5", "--base", "grouped"], "grouped"),
    # tune (nothing measured: every check comes before the log is opened)
    (["tune", "-v", "pruned", "--key", "rpi4"], "--key names a board at a tracker"),
    (["tune", "-v", "pruned", "--rpc-workers", "2"], "--rpc-workers counts boards at a tracker"),
    (["tune", "-v", "pruned", "--tracker", "nocolon", "--key", "k"], "bad tracker address 'nocolon'"),
    (["tune", "-v", "pruned", "--tracker", "127.0.0.1:9190"], "--tracker needs --key"),
    (["tune", "-v", "pruned", "--dry-run", "--tracker", "127.0.0.1:9", "--key", "k"],
     "--dry-run measures nothing; it takes no --tracker"),
    (["tune", "-v", "pruned", "--dry-run", "--adapt"], "--adapt re-measures records here"),
    (["tune", "-v", "pruned", "--tracker", "127.0.0.1:9", "--key", "k"],
     "cannot reach the RPC tracker at 127.0.0.1:9"),
    (["tune", "-v", "pruned", "-t", "rpi4"], "cannot tune for rpi4"),
    (["tune", "-v", "pruned", "--adapt", "nosuchcpu"], "--adapt nosuchcpu: no set of pruned"),
    (["tune", "-v", "nosuch"], "unknown variant 'nosuch'"),
    (["tune", "-v", "pruned", "-t", "cuda", "--layout", "NCHWc", "--dry-run"],
     "the NCHWc layout is for CPU (llvm) targets, not cuda"),
    (["tune", "-t", "nosuch"], "unknown target 'nosuch'"),
    # bench / compare
    (["bench", "--key", "rpi4"], "--key names a board at a tracker"),
    (["bench", "--key", "rpi4", "--rpc", "127.0.0.1:9"], "--key names a board at a tracker"),
    (["bench", "--rpc", "127.0.0.1:9", "--tracker", "127.0.0.1:9"], "not both"),
    (["bench", "--via", "local", "--rpc", "127.0.0.1:9"], "cannot be combined with --rpc"),
    (["bench", "--rpc", "nohostport"], "bad RPC server address 'nohostport'"),
    (["bench", "--tracker", "host:port", "--key", "k"], "bad tracker address 'host:port'"),
    (["bench", "--min-time", "2", "--max-time", "1"], "--max-time must be >= --min-time"),
    (["bench", "--cuda-graph"], "--cuda-graph needs a CUDA target"),
    (["bench", "-t", "rpi4"], "target rpi4 runs on aarch64, not on this machine"),
    (["bench", "-t", "rpi4", "--via", "local"], "target rpi4 runs on aarch64"),
    (["bench", "-v", "nosuch", "-o", "{dir}/report"], "unknown variant 'nosuch'"),
    (["bench", "-t", "nosuch"], "unknown target 'nosuch'"),
    (["bench", "-v", ","], "no variant given"),
    (["bench", "--boards", "2"], "--boards needs a tracker"),
    (["bench", "--rpc", "127.0.0.1:9"], "cannot reach the RPC server at 127.0.0.1:9"),
    (["bench", "--tracker", "127.0.0.1:9", "--key", "k"], "cannot reach the RPC tracker at 127.0.0.1:9"),
    (["prune", "--ratio", "0.5"], "give either a NIN CHECKPOINT or --variant"),
    (["prune", "{empty_pth}", "-v", "pruned", "--ratio", "0.5"], "give either a NIN CHECKPOINT or"),
    (["prune", "-v", "pruned", "--ratio", "0.5"], "variant 'pruned' is a NIN variant; Torch-Pruning"),
    (["prune", "-v", "pruned", "--ratio", "0.5", "--importance", "taylor"],
     "'--importance': 'taylor' is not one of 'magnitude', 'bn-scale'"),
    (["import", "model.h5", "--name", "x"], "cannot tell what 'model.h5' is"),
    (["import", "torchvision:resnet18"], "Missing option '--name'"),
    (["import", "torchvision:resnet18", "--name", "x", "--input-shape", "1,3,0,8"],
     "input shape must be whole numbers >= 1"),
    (["compare", "--per-layer", "pruned"], "--per-layer takes two different variants"),
    (["compare", "--pair", "pruned"], "--pair takes two different variants, e.g. resnet18-p50"),
    (["compare", "--pair", "pruned,pruned"], "--pair takes two different variants"),
    (["compare", "--pair", "pruned,nosuch"], "unknown variant 'nosuch'"),
    (["compare", "-v", "pruned,pruned-a8", "--pair", "pruned,original"],
     "--pair names original, which is not among the compared variants"),
    (["compare", "--per-layer", "pruned,nosuch"], "unknown variant 'nosuch'"),
    (["compare", "-t", "rpi4", "--per-layer", "pruned,pruned-a8"],
     "--per-layer profiles on this machine"),
    # sweep
    (["sweep", "--align", "0"], "bad alignment '0'"),
    (["sweep", "--align", "4,x"], "bad alignment 'x'"),
    (["sweep", "--align", ","], "no alignment given"),
    (["sweep", "--per-round", "16"], "--per-round is the tuner's; it needs --trials N"),
    (["sweep", "--per-round", "16", "--trials", "0"], "--per-round is the tuner's"),
    (["sweep", "--rounds", "1", "--repeat", "2"], "need at least 3 samples per variant"),
    (["sweep", "--from", "nosuch"], "unknown variant 'nosuch'"),
    (["sweep", "--ratio", "0.5"], "--ratio prunes a PyTorch model; 'pruned' is a NIN variant"),
    (["sweep", "--from", "pruned", "--base", "original", "--ratio", "0.5"], "--ratio prunes"),
    (["sweep", "--from", "{missing}.pth"], "does not exist"),
    (["sweep", "--from", "pruned", "--name", "mine"], "--name names the variant made from a --from"),
    (["sweep", "--base", "nosuch"], "unknown variant 'nosuch'"),
    (["sweep", "-t", "rpi4", "--per-layer"], "--per-layer profiles on this machine"),
    (["sweep", "-t", "rpi4"], "target rpi4 runs on aarch64, not on this machine"),
    (["sweep", "--key", "k"], "--key names a board at a tracker"),
    (["sweep", "--rpc", "127.0.0.1:9"], "cannot reach the RPC server at 127.0.0.1:9"),
    # profile
    (["profile", "-v", "pruned", "-t", "rpi4"], "profile runs on this machine"),
    (["profile", "-v", "nosuch"], "unknown variant 'nosuch'"),
    (["profile", "-v", "pruned", "--against", "nosuch"], "unknown variant 'nosuch'"),
    # checkpoints that are not checkpoints
    (["prune", "{empty_pth}", "--ratio", "0.5"], "is empty (0 bytes)"),
    # a workspace where nothing can be made
    (["--workspace", "{unwritable}", "tune", "-v", "pruned", "--trials", "100000"],
     "cannot create the tuning log folder /proc/tvmflow-no-such-dir/schedules"),
]

@pytest.fixture
def paths(tmp_path, monkeypatch):
    """The placeholders' paths; the bad-CPU preset on TVMFLOW_TARGET_PATH; no tracker in the
    environment (it would stand in for --tracker)."""
    for var in ("TVM_TRACKER_HOST", "TVM_TRACKER_PORT", "TVM_TRACKER_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TVMFLOW_HOME", str(tmp_path / "workspace"))  # what a row writes stays here

    def accepted(*_args, **_kwargs):  # a bad input that got through fails fast, not by a build
        raise AssertionError("the input was accepted: the command reached the model import")
    monkeypatch.setattr("tvmflow.ir.frontend.import_model", accepted)
    targets = tmp_path / "targets"
    targets.mkdir()
    (targets / "badcpu.toml").write_text(BAD_CPU_PRESET)
    monkeypatch.setenv("TVMFLOW_TARGET_PATH", str(targets))
    (tmp_path / "dir").mkdir()
    (tmp_path / "junk.so").write_bytes(b"not a module\n")
    (tmp_path / "empty.pth").write_bytes(b"")
    return dict(missing=str(tmp_path / "missing"), dir=str(tmp_path / "dir"),
                file=str(tmp_path / "junk.so"), empty_pth=str(tmp_path / "empty.pth"),
                unwritable="/proc/tvmflow-no-such-dir")


def _one_error_line(argv, fragment, paths, capsys):
    argv = [a.format(**paths) for a in argv]
    fragment = fragment.format(**paths)
    rc = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, err
    assert rc == 2, f"{argv}: exit {rc}\nstdout: {out}\nstderr: {err}"
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert lines == errors and len(errors) == 1, f"{argv}: not one Error: line:\n{err}"
    assert fragment in errors[0], f"{argv}: expected {fragment!r} in\n{errors[0]}"


@pytest.mark.parametrize("argv,fragment", STATIC, ids=[" ".join(a) for a, _ in STATIC])
def test_static(argv, fragment, paths, capsys):
    _one_error_line(argv, fragment, paths, capsys)


@pytest.mark.parametrize("argv,fragment", LIBRARY, ids=[" ".join(a) for a, _ in LIBRARY])
def test_library(argv, fragment, paths, capsys):
    _one_error_line(argv, fragment, paths, capsys)


def test_static_rows_load_nothing(paths, capsys):
    """Argument errors answer without TVM or PyTorch (checked in a fresh interpreter)."""
    import subprocess
    import sys
    code = ("import sys; from tvmflow.cli import main; rc = main(%r); "
            "sys.exit(10 + rc if {'tvm', 'torch'} & set(sys.modules) else rc)")
    for argv in (["bench", "--rounds", "0"], ["verify", "--tolerance", "-1"],
                 ["tune", "--no-pad"], ["run", "-m", paths["missing"]]):
        proc = subprocess.run([sys.executable, "-c", code % (argv,)], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2, (argv, proc.returncode, proc.stderr)


@pytest.mark.parametrize("argv,fragment", [
    (["verify", "--tolerance", "-1"], "-1.0 is not in the range x>=0"),
    (["compile", "-t", "badcpu", "-v", "pruned"], "LLVM knows no CPU 'cortex-a27'"),
])
def test_subprocess(argv, fragment, paths, run_cli, monkeypatch):
    """The whole way out: `python -m tvmflow` exits 2 with the one line, no traceback."""
    proc = run_cli(*argv)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert fragment in proc.stderr.strip().splitlines()[-1]


def test_bad_thread_count_in_the_environment(paths, capsys, monkeypatch):
    """TVM_NUM_THREADS stands in for --threads, and is checked like it."""
    monkeypatch.setenv("TVM_NUM_THREADS", "zero")
    for argv in (["bench"], ["verify"], ["tune", "-v", "pruned"]):
        _one_error_line(argv, "TVM_NUM_THREADS='zero' in the environment must be a whole number",
                        paths, capsys)


def test_prune_into_a_directory_that_cannot_be_made(paths, tmp_path):
    """The Python API too: prune makes its output directory before the pruning, and failing
    to is a TvmflowError (it was an OSError after the work)."""
    import torch
    from tvmflow.errors import TvmflowError
    from tvmflow.spec.prune import prune
    from tvmflow.spec.nin import create_model
    torch.save(create_model("original", pretrained=False).state_dict(), tmp_path / "orig.pth")
    with pytest.raises(TvmflowError, match="cannot create output directory /proc/"):
        prune(tmp_path / "orig.pth", 0.5, out_dir=paths["unwritable"] + "/models")


def test_sweep_refuses_before_writing(paths, capsys):
    """A sweep that cannot run fails before it writes its aligned variant files."""
    from tvmflow.workspace import Workspace
    models = Workspace.current().models
    for argv in (["sweep", "-t", "rpi4"], ["sweep", "--key", "k"], ["sweep", "--per-round", "8"]):
        assert main(argv) == 2
        assert not models.exists() or not any(models.iterdir()), list(models.iterdir())
    capsys.readouterr()


def test_targets_warns_on_a_bad_preset(paths, capsys):
    """`targets` lists the good presets and warns about the bad one; it does not fail."""
    assert main(["targets", "--json"]) == 0
    out, err = capsys.readouterr()
    assert "Warning:" in err and "cortex-a27" in err and "left out" in err
    assert '"name": "host"' in out and '"name": "badcpu"' not in out


def test_verify_checks_the_tolerance_in_the_library(paths):
    """The Python API refuses what the CLI refuses (no TVM needed: checked first)."""
    from tvmflow.errors import TvmflowError
    from tvmflow.ir.verify import verify
    for bad in (-1, float("nan"), float("inf"), "0.1"):
        with pytest.raises(TvmflowError, match="--tolerance must be a finite number >= 0"):
            verify("pruned", tolerance=bad)


def test_tune_takes_a_resolved_preset(paths):
    """tune_variants and tune take the preset object the CLI resolved (no second lookup)."""
    from tvmflow.errors import TvmflowError
    from tvmflow.target.presets import get_target
    from tvmflow.tuning.tune import tune_variants
    preset = get_target("host")
    assert get_target(preset) is preset
    with pytest.raises(TvmflowError, match="--key names a board"):
        tune_variants(["pruned"], preset, quiet=True, key="k")
