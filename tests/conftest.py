"""Shared test fixtures (keep this file small)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.fixture(autouse=True, scope="session")
def _workspace(tmp_path_factory):
    """Tests write into a workspace of their own, never into the checkout, and tune with a
    small search population."""
    old = {k: os.environ.get(k) for k in ("TVMFLOW_HOME", "TVMFLOW_TUNE_POPULATION")}
    os.environ["TVMFLOW_HOME"] = str(tmp_path_factory.mktemp("workspace"))
    # the tests' tunes check the flow, not the search: a small population per round (the
    # default 256 costs ~10 s per tune on 2 cores); test_tune checks the default and the option
    os.environ["TVMFLOW_TUNE_POPULATION"] = "32"
    yield
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _only_repo_models(monkeypatch):
    """Tests see the repo's models/ only, whatever the caller's TVMFLOW_MODEL_PATH says."""
    monkeypatch.delenv("TVMFLOW_MODEL_PATH", raising=False)


# commands that load, compile or run a module once: run_cli runs them in this process
# (through tvmflow.cli.main, the code below the interpreter's start), which saves the ~5 s of
# importing torch and TVM that every `python -m tvmflow` pays; the commands that time, tune,
# start processes or set TVM's thread count run in a subprocess
IN_PROCESS = frozenset({"models", "targets", "compile", "run", "verify", "prune", "import",
                        "schedules"})
# rich sizes the error console from COLUMNS when tvmflow.ui is imported: as in the subprocesses
os.environ["COLUMNS"] = "200"


def _command(args: list[str]) -> str | None:
    return next((a for a in args if not a.startswith("-")), None)


def _in_process(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """``tvmflow.cli.main(args)`` with ``env``'s COLUMNS and TVMFLOW_MODEL_PATH, its stdout
    and stderr captured, as a CompletedProcess."""
    import contextlib
    import io
    from tvmflow.cli import main
    keys = ("COLUMNS", "TVMFLOW_MODEL_PATH")
    saved = {k: os.environ.get(k) for k in keys}
    out, err = io.StringIO(), io.StringIO()
    try:
        for k in keys:
            if env.get(k) is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = env[k]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(args)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return subprocess.CompletedProcess(["tvmflow", *args], rc, out.getvalue(), err.getvalue())


@pytest.fixture
def run_cli():
    """Run the real CLI: ``run(*args, model_path=None, timeout=300, isolated=False)``.

    The commands of :data:`IN_PROCESS` run through ``tvmflow.cli.main`` in this process; the
    others, and any call with ``isolated=True`` (a test about a whole process: exit codes on
    the way out, two builds in two processes), run as ``python -m tvmflow ARGS``.
    ``model_path`` sets TVMFLOW_MODEL_PATH for that run.  Returns a CompletedProcess (text
    stdout/stderr, returncode).
    """
    def run(*args, model_path=None, timeout=300, isolated=False):
        args = [str(a) for a in args]
        env = {k: v for k, v in os.environ.items() if k != "TVMFLOW_MODEL_PATH"}
        env["COLUMNS"] = "200"
        if model_path is not None:
            env["TVMFLOW_MODEL_PATH"] = str(model_path)
        if not isolated and _command(args) in IN_PROCESS and "--workspace" not in args:
            return _in_process(args, env)
        return subprocess.run([sys.executable, "-m", "tvmflow", *args], env=env,
                              capture_output=True, text=True, timeout=timeout)
    return run


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """TVMFLOW_ARTIFACTS_DIR holding host modules of pruned and pruned-a8.

    One directory for the whole session (test_bench, test_compare): compiled once, then
    reused while up to date.
    """
    directory = tmp_path_factory.getbasetemp() / "tvmflow-bench-artifacts"
    directory.mkdir(exist_ok=True)
    old = os.environ.get("TVMFLOW_ARTIFACTS_DIR")
    os.environ["TVMFLOW_ARTIFACTS_DIR"] = str(directory)
    try:
        from tvmflow.measure.bench import ensure_module
        for variant in ("pruned", "pruned-a8"):
            ensure_module(variant, "host")          # compiles when missing or stale
        yield directory
    finally:
        if old is None:
            os.environ.pop("TVMFLOW_ARTIFACTS_DIR", None)
        else:
            os.environ["TVMFLOW_ARTIFACTS_DIR"] = old
