"""The emulated arm64 board: aarch64 code cross-compiled here runs there through a tracker.

Two boards are started at once by two `tvmflow board start` processes under one key, with no
tracker given: the first to get the state lock starts a tracker, the other uses it.  The
boards are killed one by one while code runs on them; the tracker goes with its last board.
A tracker the boards did not start is left alone (test_board_flow, which starts its own).

Needs the board root (`tvmflow board setup`, ~5 min once, cached under ~/.cache/tvmflow/board);
the module fixture calls :func:`tvmflow.board.ensure_setup`, which reuses it.  The boards of
this module live in their own state directory (TVMFLOW_BOARD_STATE_DIR, a tmp directory, also
for the CLI runs): a developer's running boards are never seen or stopped here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rpc_fixtures import AARCH64_TARGET, build_add_module, run_add_check, time_remote
from tvmflow import board
from tvmflow.adapter import rpc
from tvmflow.board import mounts, paths
from tvmflow.board.state import StateStore
from tvmflow.errors import TvmflowError

KEY = f"pytest-rpi4-emu-{os.getpid()}"
NAMES = ("pytest-a", "pytest-b")


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


def _gone(pid: int, host: str, port: int, within: float = 10.0) -> bool:
    """The process has exited (a zombie counts) and its port no longer accepts connections."""
    deadline = time.monotonic() + within
    while rpc.group_pids(pid) or rpc.is_listening(host, port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_killing_the_boards_mid_run_is_a_clear_error_and_leaves_nothing(boards, libs, tracker,
                                                                       state_dir):
    """One board stopped by the CLI: the tracker stays for the other.  The other stopped
    while a remote run goes on: a clear error, not a hang; the tracker went with its last
    board; no process or mount of this state is left."""
    pids = [b.pid for b in boards]
    owned = StateStore().read().tracker
    assert owned is not None and owned.address == tracker.tracker
    res = tvmflow_cli("board", "stop", "--name", NAMES[1])
    assert res.returncode == 0, res.stderr
    assert rpc.is_listening(tracker.tracker_host, tracker.tracker_port)   # still used by one
    solo = next(b for b in boards if b.name == NAMES[0])
    sess = solo.request(timeout=60)
    mod = rpc.upload_module(sess, libs["arm"])
    box: dict = {}

    def long_run():
        try:
            box["value"] = time_remote(sess, mod, number=100000, repeat=1000)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc
    th = threading.Thread(target=long_run, daemon=True)
    th.start()
    time.sleep(3.0)
    assert th.is_alive(), box   # still timing (1e8 calls under qemu take far longer)
    res = tvmflow_cli("board", "stop", "--name", NAMES[0])
    assert res.returncode == 0, res.stderr
    th.join(60)
    assert not th.is_alive(), "the remote call hangs after the board was killed"
    err = box.get("error")
    assert isinstance(err, TvmflowError), box
    assert "the RPC server failed while timing add" in str(err)
    # the tracker `start` started went with its last board: a new request is refused
    assert StateStore().read().tracker is None
    assert _gone(owned.pid, owned.host, owned.port), rpc.pid_cmdline(owned.pid)
    with pytest.raises(TvmflowError, match="cannot reach the RPC tracker"):
        solo.request(timeout=3)
    assert not any(rpc.pid_alive(p) or rpc.group_pids(p) for p in pids)
    assert board.running_boards() == [] and board.stop(all=True) == []
    with mounts.root_users() as users:
        others = [u for u in users.values() if u.state_dir != str(state_dir.resolve())]
        assert len(others) == len(users), users          # none of ours is left
    if not others and not mounts.root_servers():       # nobody else uses the root: all gone
        assert board.root_processes() == []
        assert board.mounts_under() == []
