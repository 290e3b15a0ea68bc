"""The whole flow on emulated arm64 boards behind a real tracker (issue: edge boards).

Two boards are registered under one key with a tracker started here.  Through them, with the
real CLI:

* `bench --target rpi4 -v grouped,pruned-a8 --boards 2` compiles the two variants for the board
  (the channel-shuffled one and an aligned pruned one; test_verify checks all five on the
  host), checks each
  output on the board against PyTorch (1e-4), times them, says the board is emulated, and
  spreads the variants over both boards;
* `tune --target rpi4` cross-compiles candidates here and measures them on both boards (two RPC
  runner workers), landing records in schedules/rpi4/cortex-a72/<variant>/; then one board
  is killed: the tune carries on with the other board to its full budget, no finished record
  is lost, and compile applies the records;
* the last board is killed during a bench: a clear error, not a hang, and the rounds already
  measured are saved; the tracker, which the boards did not start, is left alone.

Needs the board root (`tvmflow board setup`, cached under ~/.cache/tvmflow/board).  The
boards live in this module's own state directory (TVMFLOW_BOARD_STATE_DIR), so a developer's
boards are never touched, and the CLI runs see this module's boards as emulated.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tvmflow import board
from tvmflow.tuning import schedules as S
from tvmflow.adapter import rpc
from tvmflow.board import paths

KEY = f"pytest-flow-{os.getpid()}"
NAMES = ("pytest-flow-a", "pytest-flow-b")
VARIANTS = ("grouped", "pruned-a8")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Artifacts and schedules of this module's own (no shipped rpi4 logs leak in)."""
    root = tmp_path_factory.mktemp("flow")
    e = {k: v for k, v in os.environ.items() if not k.startswith(("TVM_TRACKER", "TVMFLOW_"))}
    e.update(TVMFLOW_ARTIFACTS_DIR=str(root / "artifacts"), TVMFLOW_SCHEDULES=str(root / "sched"),
             COLUMNS="200")
    e[paths.STATE_ENV] = str(root / "board-state")
    with pytest.MonkeyPatch.context() as mp:          # this process's board calls too
        mp.setenv(paths.STATE_ENV, e[paths.STATE_ENV])
        yield {"root": root, "env": e}


def cli(env, *args, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tvmflow", *map(str, args)], env=env["env"],
                          capture_output=True, text=True, timeout=timeout)


def popen(env, *args, log: Path) -> subprocess.Popen:
    out = open(log, "w")
    return subprocess.Popen([sys.executable, "-m", "tvmflow", *map(str, args)], env=env["env"],
                            stdout=out, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def tracker(env, tmp_path_factory):
    board.ensure_setup()
    proc = rpc.start_tracker(log=tmp_path_factory.mktemp("flow_tracker") / "tracker.log",
                             timeout=180)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def boards(tracker):
    with board.running(NAMES, tracker.address, KEY) as infos:
        yield {b.name: b for b in infos}


def served(info) -> int:
    """Modules the board's server has loaded so far (one line per session's load)."""
    return Path(info.log).read_text(errors="replace").count("load_module")


def test_bench_two_variants_on_two_boards(env, tracker, boards):
    before = {n: served(b) for n, b in boards.items()}
    out = env["root"] / "bench"
    r = cli(env, "bench", "--target", "rpi4", "-v", ",".join(VARIANTS), "--tracker", tracker.address,
            "--key", KEY, "--boards", "2", "--warmup", "1", "--min-repeats", "3", "--min-time", "0",
            "--max-time", "2", "--rounds", "2", "-o", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    rep = json.loads((out / "report.json").read_text())
    assert [x["variant"] for x in rep["results"]] == list(VARIANTS)
    for x in rep["results"]:
        # the output computed on the board matched PyTorch before any timing
        assert x["check"]["ok"] is True and x["check"]["max_abs_err"] <= 1e-4, x["check"]
        assert x["latency"]["tvm"]["n"] >= 3
        assert Path(x["module"]) == env["root"] / "artifacts" / "rpi4" / f"{x['variant']}.so"
    envd = rep["environment"]
    assert envd["emulated"] is True and envd["server_arch"] == "aarch64"
    assert "emulat" in r.stdout.lower()          # the terminal report says so too
    assert "emulat" in (out / "report.md").read_text().lower()
    # both boards served: two distinct servers in the report, and both servers' logs
    servers = {x["runners"]["tvm"]["server"] for x in rep["results"]}
    assert len(servers) == 2 and sorted(servers) == sorted(envd["boards"])
    for name, info in boards.items():
        assert served(info) > before[name], f"board {name} served no module"


def test_tune_uses_both_boards_and_carries_on_when_one_dies(env, tracker, boards):
    """A tune through the tracker measures on both boards (two runner workers); one board is
    killed once both have measured: the tune carries on with the other to its whole budget,
    no finished record is lost, and compile picks the records up for the board."""
    d = env["root"] / "sched" / "rpi4" / "cortex-a72" / "pruned-a8"      # the board's CPU set
    log = env["root"] / "tune-kill.log"
    survivor = boards[NAMES[0]]
    before = {n: served(b) for n, b in boards.items()}
    proc = popen(env, "tune", "--target", "rpi4", "-v", "pruned-a8", "--trials", "24",
                 "--per-round", "8", "--trials-per-task", "8", "--tracker", tracker.address,
                 "--key", KEY, "--rpc-workers", "2", "--json", log=log)
    counts = []
    try:
        deadline = time.monotonic() + 600
        # a first batch is committed, and each board has loaded a candidate
        while S.record_count(d) == 0 or any(served(b) <= before[n] for n, b in boards.items()):
            assert proc.poll() is None, "the tune ended before both boards measured:\n" + \
                log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no record from both boards after 10 minutes"
            time.sleep(0.5)
        counts.append(S.record_count(d))
        board.stop(NAMES[1])                              # pull one board's plug
        served_at_kill = served(survivor)
        while proc.poll() is None:
            counts.append(S.record_count(d))
            assert time.monotonic() < deadline + 300, "the tune hangs after a board died"
            time.sleep(1)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
    text = log.read_text()
    counts.append(S.record_count(d))
    assert counts == sorted(counts), counts               # never drops
    assert "Traceback" not in text, text[-3000:]
    # it carried on with the other board, to the whole budget
    assert proc.returncode == 0, text[-3000:]
    res = json.loads(text[text.index("["):])[0]
    assert res["trials_total"] >= 24 and res["valid"] >= counts[0], res
    assert served(survivor) > served_at_kill, "the surviving board measured nothing after the kill"
    assert S.repair(d).ok                                 # the database is whole
    meta = S.read_meta(d)
    assert meta["trials"] >= 24 and S.record_count(d) >= res["valid"]
    assert meta["target"]["mtriple"] == "aarch64-linux-gnu" and meta["cpu"] == "cortex-a72"
    assert f"key {KEY} (2 runner workers)" in meta["measured_on"]
    assert len(meta["task_trials"]) >= 2                  # a few tasks x 8 trials
    # compile picks the records up for the board
    r = cli(env, "compile", "--target", "rpi4", "-v", "pruned-a8", "--force")
    assert r.returncode == 0, r.stderr[-2000:]
    side = json.loads((env["root"] / "artifacts" / "rpi4" / "pruned-a8.json").read_text())
    assert side["schedules"]["path"] == str(d) and side["coverage"]["tuned"] >= 1
    assert side["schedules"]["match"] == "exact" and side["schedules"]["cpu"] == "cortex-a72"


def test_killing_the_last_board_during_a_bench_is_a_clear_error(env, tracker, boards):
    alive = [b for b in board.running_boards() if b.name in NAMES]
    assert len(alive) == 1, alive                         # the previous test killed the other
    out = env["root"] / "bench-kill"
    log = env["root"] / "bench-kill.log"
    proc = popen(env, "bench", "--target", "rpi4", "-v", "pruned-a8", "--tracker", tracker.address,
                 "--key", KEY, "--warmup", "1", "--min-repeats", "1000", "--min-time", "0",
                 "--max-time", "600", "--rounds", "50", "--timeout", "20", "-o", out, log=log)
    try:
        deadline = time.monotonic() + 600
        while "round 1/50" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no round measured"
            time.sleep(0.5)
        board.stop(alive[0].name)
        t0 = time.monotonic()
        proc.wait(120)
        waited = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert proc.returncode == 2, text[-3000:]
    assert waited < 120 and "Traceback" not in text
    assert "Error:" in text and "partial results" in text, text[-3000:]
    partial = json.loads((out / "report.partial.json").read_text())
    assert partial["partial"] is True and partial["results"][0]["latency"]["tvm"]["n"] >= 1
    assert not (out / "report.json").exists()
    # the boards are gone; the tracker they did not start is left alone
    assert board.running_boards() == [] and tracker.alive()
