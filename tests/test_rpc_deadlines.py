"""Deadlines and orphans: no RPC call outlives its timeout, no server outlives tvmflow.

* A socket that accepts and never answers (not a TVM server, or a hung one): connect,
  request and the tracker queries fail with a TvmflowError within the timeout plus a small
  margin -- the RPC handshake included, also when the server answers the first handshake
  (tvmflow's probe) and then goes silent for TVM's own.
* ``tvmflow bench --rpc HOST:PORT --timeout 3`` to such a socket: exit 2, one error line.
* The tracker and server of :func:`local_rpc` go away when the process that started them is
  killed by SIGKILL (parent-death signal + watchdog, each checked alone); a process started
  with ``outlive=True`` (the boards of ``tvmflow board start``) stays.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import tvm.rpc  # noqa: F401 - imported before any timing (connect and request import it first)

from rpc_fixtures import bounded
from tvmflow.adapter import rpc
from tvmflow.adapter.rpc import session as rpc_session
from tvmflow.adapter.rpc import tracker as rpc_tracker
from tvmflow.errors import TvmflowError

MARGIN = 1.5      # seconds a failing call may take beyond its timeout


@contextlib.contextmanager
def silent_server(answer_first: int = 0):
    """A loopback socket that accepts connections and never answers; the first
    ``answer_first`` connections get a TVM server's "mismatch" to their handshake."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.1)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def answer(conn: socket.socket) -> None:
        conn.settimeout(5)
        _, keylen = struct.unpack("<ii", conn.recv(8, socket.MSG_WAITALL))
        conn.recv(keylen, socket.MSG_WAITALL)
        conn.sendall(struct.pack("<i", rpc_session.RPC_MAGIC + 2))

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except (TimeoutError, OSError):
                continue
            conns.append(conn)
            if len(conns) <= answer_first:
                answer(conn)
    th = threading.Thread(target=loop, daemon=True)
    th.start()
    try:
        yield sock.getsockname()[1], conns
    finally:
        stop.set()
        th.join(2)
        for conn in conns:
            conn.close()
        sock.close()


def timed_error(fn, limit: float = 30) -> tuple[TvmflowError, float]:
    """The TvmflowError ``fn()`` raises and the seconds it took; run in a thread, so that a
    hang fails the test after ``limit`` seconds instead of hanging the suite."""
    box, took = bounded(fn, limit)
    assert isinstance(box.get("error"), TvmflowError), box
    return box["error"], took


def test_protocol_constants_match_tvm():
    from tvm.rpc import base
    assert rpc_session.RPC_MAGIC == base.RPC_MAGIC
    assert set(rpc_session.RPC_ANSWERS) == {base.RPC_CODE_SUCCESS, base.RPC_CODE_DUPLICATE,
                                            base.RPC_CODE_MISMATCH}
    assert rpc_tracker.RPC_TRACKER_MAGIC == base.RPC_TRACKER_MAGIC
    assert (rpc_tracker.TRACKER_SUCCESS, rpc_tracker.TRACKER_REQUEST, rpc_tracker.TRACKER_SUMMARY) \
        == (base.TrackerCode.SUCCESS, base.TrackerCode.REQUEST, base.TrackerCode.SUMMARY)


def test_connect_to_a_socket_that_never_answers_fails_in_time():
    with silent_server() as (port, conns):
        err, took = timed_error(lambda: rpc.connect("127.0.0.1", port, timeout=2))
        assert conns, "the test server accepted nothing"
    assert took < 2 + MARGIN, took
    assert f"the RPC server at 127.0.0.1:{port} accepted the connection but did not answer " \
           "the RPC handshake within 2 s" in str(err)


def test_connect_deadline_covers_tvms_own_handshake():
    """The server answers tvmflow's probe, then never TVM's handshake: TVM's C++ connect
    blocks for good; the deadline abandons it."""
    with silent_server(answer_first=1) as (port, conns):
        err, took = timed_error(lambda: rpc.connect("127.0.0.1", port, timeout=3))
        assert len(conns) == 2, "TVM never connected: the probe alone failed"
    assert took < 3 + MARGIN, took
    assert f"cannot open an RPC session to 127.0.0.1:{port}: no answer within" in str(err)


def test_a_silent_tracker_fails_in_time():
    with silent_server() as (port, _):
        err, took = timed_error(lambda: rpc.tracker_summary("127.0.0.1", port, timeout=2))
        assert took < 2 + MARGIN and f"no RPC tracker answered at 127.0.0.1:{port}" in str(err)
        err, took = timed_error(lambda: rpc.request("127.0.0.1", port, "k", timeout=2))
        assert took < 2 + MARGIN and "no RPC tracker answered" in str(err)


def test_a_socket_that_closes_at_once_is_not_a_server():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)
        port = sock.getsockname()[1]

        def close_each():
            with contextlib.suppress(OSError):
                for _ in range(2):
                    sock.accept()[0].close()
        threading.Thread(target=close_each, daemon=True).start()
        err, took = timed_error(lambda: rpc.connect("127.0.0.1", port, timeout=5))
    assert took < 5 and "closed the connection during the RPC handshake" in str(err)


def test_call_with_deadline_passes_results_and_errors():
    assert rpc.call_with_deadline(lambda: 42, 1, "answer") == 42
    with pytest.raises(KeyError):
        rpc.call_with_deadline(lambda: {}["x"], 1, "lookup")
    err, took = timed_error(lambda: rpc.call_with_deadline(lambda: time.sleep(30), 0.5, "nap"))
    assert took < 0.5 + MARGIN and str(err).startswith("nap: no answer within 0.5 s")


def test_bench_rpc_to_a_silent_socket_exits_2_within_its_timeout(tmp_path):
    env = dict(os.environ, TVMFLOW_ARTIFACTS_DIR=str(tmp_path / "artifacts"), COLUMNS="200")
    with silent_server() as (port, conns):
        t0 = time.monotonic()
        res = subprocess.run([sys.executable, "-m", "tvmflow", "bench", "-v", "pruned",
                              "--rpc", f"127.0.0.1:{port}", "--timeout", "3",
                              "-o", str(tmp_path / "out")],
                             capture_output=True, text=True, timeout=120, env=env)
        took = time.monotonic() - t0
        assert conns
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert "did not answer the RPC handshake within 3 s" in res.stderr, res.stderr[-2000:]
    assert took < 60, took      # the CLI's start-up included; without the fix it never ends


# --------------------------------------------------------------------------- orphans


CHILD = textwrap.dedent("""
    import json, os, sys, threading, time
    from tvmflow.adapter import rpc
    mode = sys.argv[1]
    KEEP = []
    def serve():
        if mode == "outlive":
            procs = [rpc.start_tracker(outlive=True, timeout=180)]
        else:
            cm = rpc.local_rpc(1, key="orphan-test", timeout=180)
            KEEP.append(cm)                # a collected generator would stop them at once
            c = cm.__enter__()
            procs = [c.tracker, *c.servers]
        if mode == "no-watchdog":
            os.kill(rpc.WATCHDOG.pid, 9)
        print(json.dumps({"groups": [p.pid for p in procs], "ports": [p.port for p in procs],
                          "watchdog": rpc.WATCHDOG.pid}), flush=True)
    if mode == "thread":
        th = threading.Thread(target=serve)
        th.start()
        th.join()      # the forking thread is gone: no parent-death signal, the watchdog alone
    else:
        serve()
    time.sleep(600)
""")


@pytest.fixture
def children():
    """Start CHILD processes; on teardown kill them and every group they reported."""
    started: list[tuple[subprocess.Popen, dict]] = []

    def start(mode: str) -> tuple[subprocess.Popen, dict]:
        child = subprocess.Popen([sys.executable, "-c", CHILD, mode], stdout=subprocess.PIPE,
                                 text=True)
        started.append((child, {"groups": []}))
        child_info = _read_child(child)
        started[-1] = (child, child_info)
        return child, child_info
    yield start
    for child, child_info in started:
        child.kill()
        child.wait(10)
        for g in child_info["groups"]:
            rpc.kill_group(g, 1)


def _read_child(child: subprocess.Popen) -> dict:
    line = child.stdout.readline()
    assert line, f"the child process failed (exit {child.wait()})"
    info = json.loads(line)
    deadline = time.monotonic() + 60           # the popen workers are up once listening
    while not all(rpc.is_listening("127.0.0.1", p) for p in info["ports"]):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return info


def _wait_gone(pids, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = [p for p in pids if rpc.pid_alive(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in pids if rpc.pid_alive(p)]


@pytest.mark.parametrize("mode", ["main", "thread"])
def test_local_rpc_dies_with_its_process_on_sigkill(children, mode):
    child, info = children(mode)
    pids = [p for g in info["groups"] for p in rpc.group_pids(g)]
    assert len(pids) >= 4, pids         # tracker + server, each with its popen worker
    child.kill()
    child.wait(10)
    left = _wait_gone([*pids, info["watchdog"]], 8)
    assert not left, [(p, rpc.pid_cmdline(p)) for p in left]
    assert not any(rpc.group_pids(g) for g in info["groups"])
    assert not any(rpc.is_listening("127.0.0.1", p) for p in info["ports"])


def test_parent_death_signal_alone_takes_the_leaders(children):
    """Watchdog killed first: the tracker's and server's own processes still die at once
    (their popen workers are what the watchdog is for)."""
    child, info = children("no-watchdog")
    child.kill()
    child.wait(10)
    assert not _wait_gone(info["groups"], 5)


def test_outlive_keeps_the_process_when_its_parent_dies(children):
    child, info = children("outlive")
    child.kill()
    child.wait(10)
    time.sleep(2)
    assert all(rpc.pid_alive(g) for g in info["groups"])
    assert rpc.tracker_summary("127.0.0.1", info["ports"][0], timeout=5)["servers"] == []
    for g in info["groups"]:
        rpc.kill_group(g, 2)
    assert not any(rpc.group_pids(g) for g in info["groups"])
