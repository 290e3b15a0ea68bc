"""The emulated arm64 board, and the whole flow on it (issue: edge boards).

Two boards are started at once by two `tvmflow board start` processes under one key, with no
tracker given: the first to get the state lock starts a tracker, the other uses it.  Then:

* aarch64 code cross-compiled here runs on them through the tracker, both serve, and the
  status lists them;
* `bench --target rpi4 -v grouped,pruned-a8 --boards 2` compiles the two variants for the board
  (the channel-shuffled one and an aligned pruned one; test_verify checks all five on the
  host), checks each output on the board against PyTorch (1e-4), times them, says the board
  is emulated, and spreads the variants over both boards;
* `tune --target rpi4` cross-compiles candidates here and measures them on both boards (two RPC
  runner workers), landing records in schedules/rpi4/cortex-a72/<variant>/; then one board
  is stopped (`tvmflow board stop`): the tune carries on with the other to its full budget,
  no finished record is lost, and compile applies the records;
* the last board is killed during a bench: a clear error, not a hang, the rounds already
  measured are saved, the tracker went with its last board, and no process or mount of this
  module is left.

Needs the board root (`tvmflow board setup`, ~5 min once, cached under ~/.cache/tvmflow/board);
the module fixture calls :func:`tvmflow.board.ensure_setup`, which reuses it.  The boards live
in this module's own state directory (TVMFLOW_BOARD_STATE_DIR, also for the CLI runs), so a
developer's boards are never seen or stopped, and the CLI runs see these boards as emulated.
(That a tracker the boards did not start is left alone: test_board_parts.)
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

from rpc_fixtures import AARCH64_TARGET, build_add_module, run_add_check
from tvmflow import board
from tvmflow.adapter import rpc
from tvmflow.board import mounts, paths
from tvmflow.board.state import StateStore
from tvmflow.errors import TvmflowError
from tvmflow.tuning import schedules as S

KEY = f"pytest-rpi4-emu-{os.getpid()}"
NAMES = ("pytest-a", "pytest-b")
VARIANTS = ("grouped", "pruned-a8")


def tvmflow_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tvmflow", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module", autouse=True)
def state_dir(tmp_path_factory):
    """This module's own board state (the CLI runs inherit it through the environment)."""
    directory = tmp_path_factory.mktemp("board_state")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(paths.STATE_ENV, str(directory))
        yield directory


@pytest.fixture(scope="module")
def setup_info():
    return board.ensure_setup()


@pytest.fixture(scope="module")
def libs(tmp_path_factory, setup_info):
    d = tmp_path_factory.mktemp("board_libs")
    return {
        "arm": build_add_module(d / "add_a72.so", AARCH64_TARGET,
                                    cross_cc="aarch64-linux-gnu-gcc"),
        "x86": build_add_module(d / "add_x86.so"),
    }


@pytest.fixture(scope="module")
def boards(setup_info):
    """Two boards under one key, started in parallel by two CLI processes; no tracker given."""
    procs = [subprocess.Popen([sys.executable, "-m", "tvmflow", "board", "start", "--name", n,
                               "--key", KEY], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for n in NAMES]
    try:
        results = [(p.wait(300), *p.communicate()) for p in procs]
        assert all(rc == 0 for rc, _o, _e in results), results
        infos = sorted((b for b in board.running_boards() if b.name in NAMES), key=lambda b: b.name)
        yield infos
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        board.stop(all=True)


@pytest.fixture(scope="module")
def tracker(boards):
    """The tracker the first `board start` started (both boards use it)."""
    assert len({b.tracker for b in boards}) == 1 and all(b.tracker_owned for b in boards)
    return boards[0]


def test_setup_marker_records_what_was_installed(setup_info):
    m = setup_info.marker
    assert m.arch == "arm64" and m.suite == "bookworm"
    assert m.python.startswith("3.11.")
    assert m.tvm.startswith("0.27")
    assert any(w.startswith("apache_tvm-0.27.0.post1-") and "aarch64" in w for w in m.wheels)
    assert any(w.startswith("apache_tvm_ffi-0.1.14") for w in m.wheels)
    assert Path(board.rootfs(), "opt/tvm-venv/bin/python").exists()


def test_cross_compiled_add_runs_on_the_board(boards, libs):
    info = boards[0]
    sess = info.request(timeout=60)
    assert run_add_check(sess, libs["arm"]) == 0.0
    # its TVM runs the cores of the board it stands in for: the server's TVM_NUM_THREADS gives
    # its pool that many workers (TVM's default would stop at this machine's cores under qemu)
    from tvmflow.adapter.runtime import remote_session
    from tvmflow.target.presets import get_target
    cores = get_target(board.BOARD_TARGET).target["num-cores"]
    assert info.threads == cores
    assert remote_session(sess, "tracker", info.tracker, KEY).use_threads(cores) == cores
    assert run_add_check(sess, libs["arm"], n=1024, seed=7) == 0.0
    # the board really is aarch64: the host's x86 library does not load there
    with pytest.raises(TvmflowError, match="cannot upload add_x86.so"):
        rpc.upload_module(sess, libs["x86"])


def test_two_boards_under_one_key_both_serve(boards, libs, tracker):
    summary = rpc.tracker_summary(tracker.tracker_host, tracker.tracker_port)
    assert sorted(s["port"] for s in rpc.servers_under(summary, KEY)) == sorted(b.port for b in boards)
    s1 = boards[0].request(timeout=60)
    s2 = boards[1].request(timeout=60)   # the first is busy: the tracker hands out the other
    assert rpc.server_workdir(s1) != rpc.server_workdir(s2)
    assert run_add_check(s1, libs["arm"], seed=1) == 0.0
    assert run_add_check(s2, libs["arm"], seed=2) == 0.0
    del s1, s2
    for info in boards:
        assert "load_module" in Path(info.log).read_text(), info.log
    st = board.status()
    assert sorted(b.info.name for b in st.boards) == sorted(NAMES)     # ours only
    assert all(b.alive and b.registered for b in st.boards), st.boards
    assert len(st.mounts) == 3 and st.setup_complete


def test_cli_status_json_lists_the_boards(boards):
    res = tvmflow_cli("board", "status", "--json")
    assert res.returncode == 0, res.stderr
    st = json.loads(res.stdout)
    assert st["state_dir"] == os.environ[paths.STATE_ENV]
    names = {b["name"]: b for b in st["boards"]}
    for info in boards:
        assert names[info.name]["port"] == info.port and names[info.name]["alive"]


def test_request_for_a_key_without_board_fails_fast(boards, tracker):
    with pytest.raises(TvmflowError, match="no RPC server is registered under key 'rpi5-none'"):
        rpc.request(tracker.tracker_host, tracker.tracker_port, "rpi5-none", timeout=3)


def test_cli_errors():
    port = rpc.find_free_port()
    res = tvmflow_cli("board", "start", "--name", "pytest-x", "--tracker", f"127.0.0.1:{port}")
    assert res.returncode == 2
    assert f"Error: cannot reach the RPC tracker at 127.0.0.1:{port}" in res.stderr
    assert "Traceback" not in res.stderr
    res = tvmflow_cli("board", "start", "--tracker", "nohostport")
    assert res.returncode == 2 and "Error: bad tracker address 'nohostport'" in res.stderr
    res = tvmflow_cli("board", "stop", "--name", "no-such-board")
    assert res.returncode == 2 and "Error: no board named 'no-such-board'" in res.stderr


@pytest.fixture(scope="module")
def flow(tmp_path_factory, state_dir):
    """The CLI runs' environment: artifacts and schedules of this module's own (no shipped
    rpi4 logs leak in), this module's board state."""
    root = tmp_path_factory.mktemp("flow")
    e = {k: v for k, v in os.environ.items() if not k.startswith(("TVM_TRACKER", "TVMFLOW_"))}
    e.update(TVMFLOW_ARTIFACTS_DIR=str(root / "artifacts"), TVMFLOW_SCHEDULES=str(root / "sched"),
             COLUMNS="200")
    e[paths.STATE_ENV] = str(state_dir)
    return {"root": root, "env": e}


def cli(env, *args, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tvmflow", *map(str, args)], env=env["env"],
                          capture_output=True, text=True, timeout=timeout)


def popen(env, *args, log: Path) -> subprocess.Popen:
    out = open(log, "w")
    return subprocess.Popen([sys.executable, "-m", "tvmflow", *map(str, args)], env=env["env"],
                            stdout=out, stderr=subprocess.STDOUT, text=True)


def served(info) -> int:
    """Modules the board's server has loaded so far (one line per session's load)."""
    return Path(info.log).read_text(errors="replace").count("load_module")


def _gone(pid: int, host: str, port: int, within: float = 10.0) -> bool:
    """The process group has exited (zombies count) and its port no longer accepts."""
    deadline = time.monotonic() + within
    while rpc.group_pids(pid) or rpc.is_listening(host, port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_bench_two_variants_on_two_boards(flow, tracker, boards):
    before = {n: served(b) for n, b in {b.name: b for b in boards}.items()}
    out = flow["root"] / "bench"
    r = cli(flow, "bench", "--target", "rpi4", "-v", ",".join(VARIANTS), "--tracker",
            tracker.tracker, "--key", KEY, "--boards", "2", "--warmup", "1", "--min-repeats", "3",
            "--min-time", "0",
            "--max-time", "2", "--rounds", "2", "-o", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    rep = json.loads((out / "report.json").read_text())
    assert [x["variant"] for x in rep["results"]] == list(VARIANTS)
    for x in rep["results"]:
        # the output computed on the board matched PyTorch before any timing
        assert x["check"]["ok"] is True and x["check"]["max_abs_err"] <= 1e-4, x["check"]
        assert x["latency"]["tvm"]["n"] >= 3
        assert Path(x["module"]) == flow["root"] / "artifacts" / "rpi4" / f"{x['variant']}.so"
    envd = rep["environment"]
    assert envd["emulated"] is True and envd["server_arch"] == "aarch64"
    assert "emulat" in r.stdout.lower()          # the terminal report says so too
    assert "emulat" in (out / "report.md").read_text().lower()
    # both boards served: two distinct servers in the report, and both servers' logs
    servers = {x["runners"]["tvm"]["server"] for x in rep["results"]}
    assert len(servers) == 2 and sorted(servers) == sorted(envd["boards"])
    for name, info in {b.name: b for b in boards}.items():
        assert served(info) > before[name], f"board {name} served no module"


def test_tune_uses_both_boards_and_carries_on_when_one_dies(flow, tracker, boards):
    """A tune through the tracker measures on both boards (two runner workers); one board is
    killed once both have measured: the tune carries on with the other to its whole budget,
    no finished record is lost, and compile picks the records up for the board."""
    d = flow["root"] / "sched" / "rpi4" / "cortex-a72" / "pruned-a8"      # the board's CPU set
    log = flow["root"] / "tune-kill.log"
    survivor = next(b for b in boards if b.name == NAMES[0])
    before = {n: served(b) for n, b in {b.name: b for b in boards}.items()}
    proc = popen(flow, "tune", "--target", "rpi4", "-v", "pruned-a8", "--trials", "24",
                 "--per-round", "8", "--trials-per-task", "8", "--tracker", tracker.tracker,
                 "--key", KEY, "--rpc-workers", "2", "--json", log=log)
    counts = []
    try:
        deadline = time.monotonic() + 600
        # a first batch is committed, and each board has loaded a candidate
        while S.record_count(d) == 0 or any(served(b) <= before[b.name] for b in boards):
            assert proc.poll() is None, "the tune ended before both boards measured:\n" + \
                log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no record from both boards after 10 minutes"
            time.sleep(0.5)
        counts.append(S.record_count(d))
        res = cli(flow, "board", "stop", "--name", NAMES[1], timeout=120)   # pull its plug
        assert res.returncode == 0, res.stderr
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
    r = cli(flow, "compile", "--target", "rpi4", "-v", "pruned-a8", "--force")
    assert r.returncode == 0, r.stderr[-2000:]
    side = json.loads((flow["root"] / "artifacts" / "rpi4" / "pruned-a8.json").read_text())
    assert side["schedules"]["path"] == str(d) and side["coverage"]["tuned"] >= 1
    assert side["schedules"]["match"] == "exact" and side["schedules"]["cpu"] == "cortex-a72"


def test_killing_the_last_board_during_a_bench_is_a_clear_error_and_leaves_nothing(
        flow, tracker, boards, state_dir):
    owned = StateStore().read().tracker
    assert owned is not None and owned.address == tracker.tracker
    alive = [b for b in board.running_boards() if b.name in NAMES]
    assert len(alive) == 1, alive                         # the previous test killed the other
    out = flow["root"] / "bench-kill"
    log = flow["root"] / "bench-kill.log"
    proc = popen(flow, "bench", "--target", "rpi4", "-v", "pruned-a8", "--tracker",
                 tracker.tracker, "--key", KEY, "--warmup", "1", "--min-repeats", "1000",
                 "--min-time", "0",
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
    # the tracker the first `board start` started went with its last board; nothing is left
    assert board.running_boards() == [] and StateStore().read().tracker is None
    assert _gone(owned.pid, owned.host, owned.port), rpc.pid_cmdline(owned.pid)
    with pytest.raises(TvmflowError, match="cannot reach the RPC tracker"):
        tracker.request(timeout=3)
    assert not any(rpc.pid_alive(b.pid) or rpc.group_pids(b.pid) for b in boards)
    with mounts.root_users() as users:
        others = [u for u in users.values() if u.state_dir != str(state_dir.resolve())]
        assert len(others) == len(users), users          # none of ours is left
    if not others and not mounts.root_servers():       # nobody else uses the root: all gone
        assert board.root_processes() == []
        assert board.mounts_under() == []
