"""TVM RPC processes on loopback: tracker + servers, bounded requests, clean shutdown."""

from __future__ import annotations

import re
import time

import pytest

from rpc_fixtures import bounded, build_add_module, run_add_check
from tvmflow.adapter import rpc
from tvmflow.errors import TvmflowError

KEY = "infra-x86"


@pytest.fixture(scope="module")
def add_lib(tmp_path_factory):
    """A host (x86) add function compiled once for the module."""
    return build_add_module(tmp_path_factory.mktemp("lib") / "add_host.so")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    logs = tmp_path_factory.mktemp("rpc_logs")
    with rpc.local_rpc(2, key=KEY, log_dir=logs) as c:
        c.log_dir = logs
        yield c
    for proc in [c.tracker, *c.servers]:
        assert not proc.alive(), f"{proc.kind} {proc.pid} survived local_rpc"


def test_tracker_lists_both_servers(cluster):
    summary = cluster.summary()
    ports = sorted(s["port"] for s in rpc.servers_under(summary, KEY))
    assert ports == sorted(p.port for p in cluster.servers)
    # a server re-offers its key a moment after a probe or an earlier session: both are free
    # again within seconds (on a loaded machine one may still be on its way back)
    deadline = time.monotonic() + 15
    while cluster.summary()["queue"][KEY]["free"] != 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert cluster.summary()["queue"][KEY]["free"] == 2


def test_sessions_reach_both_servers(cluster, add_lib):
    # two sessions held at once must land on two different servers
    s1 = cluster.request(timeout=20)
    s2 = cluster.request(timeout=20)
    assert rpc.server_workdir(s1) != rpc.server_workdir(s2)
    assert run_add_check(s1, add_lib) == 0.0
    assert run_add_check(s2, add_lib, seed=1) == 0.0
    assert cluster.summary()["queue"][KEY]["free"] == 0
    del s1, s2
    # both servers logged a session and a load_module of the uploaded library
    for i, _ in enumerate(cluster.servers):
        text = (cluster.log_dir / f"server-{i}.log").read_text()
        assert re.search(r"connected from", text), text
        assert "load_module" in text and "add_host-" in text, text
    # and both come back to the tracker's free queue
    deadline = time.monotonic() + 20
    while cluster.summary()["queue"][KEY]["free"] != 2:
        assert time.monotonic() < deadline, cluster.summary()
        time.sleep(0.2)


def test_all_servers_busy_is_a_clear_error(cluster):
    held = [cluster.request(timeout=20), cluster.request(timeout=20)]
    box, _ = bounded(lambda: cluster.request(timeout=2), 30)
    assert isinstance(box.get("error"), TvmflowError), box
    assert f"no free RPC server under key '{KEY}'" in str(box["error"])
    assert "2 registered" in str(box["error"])
    del held


def test_unreachable_tracker_is_a_clear_error():
    port = rpc.find_free_port()
    box, _ = bounded(lambda: rpc.request("127.0.0.1", port, KEY, timeout=3), 30)
    err = box.get("error")
    assert isinstance(err, TvmflowError), box
    assert f"cannot reach the RPC tracker at 127.0.0.1:{port}" in str(err)
    with pytest.raises(TvmflowError, match="cannot reach the RPC tracker"):
        rpc.tracker_summary("127.0.0.1", port, timeout=2)


def test_unreachable_server_is_a_clear_error():
    port = rpc.find_free_port()
    with pytest.raises(TvmflowError, match=f"cannot reach the RPC server at 127.0.0.1:{port}"):
        rpc.connect("127.0.0.1", port, timeout=2)


def test_no_board_under_key_is_a_clear_error(cluster):
    box, _ = bounded(lambda: cluster and rpc.request(cluster.tracker_host, cluster.tracker_port,
                                                      "no-such-board", timeout=2), 30)
    err = box.get("error")
    assert isinstance(err, TvmflowError), box
    msg = str(err)
    assert "no RPC server is registered under key 'no-such-board'" in msg
    assert KEY in msg  # it names the keys the tracker does know


def test_not_a_tracker_is_a_clear_error(cluster):
    # a direct RPC server is not a tracker: the magic differs
    with pytest.raises(TvmflowError, match="is not a TVM RPC tracker|no RPC tracker answered"):
        rpc.tracker_summary("127.0.0.1", cluster.servers[0].port, timeout=3)


def test_direct_server_session_and_stop(add_lib, tmp_path):
    """A server without tracker; it forks a worker per session, and stop must take it too."""
    proc = rpc.start_server(log=tmp_path / "server.log")
    try:
        sess = rpc.connect(proc.host, proc.port, timeout=5)
        assert run_add_check(sess, add_lib, seed=2) == 0.0
        assert run_add_check(sess, add_lib, seed=3) == 0.0   # same library uploaded again
        assert len(rpc.group_pids(proc.pid)) >= 2  # server + session worker
    finally:
        proc.stop()
    assert not proc.alive()
    assert rpc.group_pids(proc.pid) == []
    assert not rpc.is_listening(proc.host, proc.port)
    # the session is gone: a call is a clear error, not a hang
    box, _ = bounded(lambda: run_add_check(sess, add_lib), 60)
    assert isinstance(box.get("error"), TvmflowError), box


def test_local_rpc_stops_everything_on_exception():
    seen = []
    with pytest.raises(KeyError):
        with rpc.local_rpc(1, key="boom") as c:
            seen = [c.tracker, *c.servers]
            raise KeyError("user code failed")
    assert seen and all(not p.alive() and not rpc.group_pids(p.pid) for p in seen)
    assert not any(rpc.is_listening(p.host, p.port) for p in seen)


def test_non_loopback_bind_warns(capfd):
    proc = rpc.start_tracker(host="0.0.0.0")
    try:
        assert rpc.tracker_summary("127.0.0.1", proc.port)["servers"] == []
    finally:
        proc.stop()
    err = capfd.readouterr().err
    assert "TVM RPC has no authentication" in err and f"0.0.0.0:{proc.port}" in err
    assert rpc.warn_if_exposed("10.1.2.3", 9090, "the RPC server")
    assert "anyone who can reach 10.1.2.3:9090" in capfd.readouterr().err
    assert not rpc.warn_if_exposed("127.0.0.1", 9090, "the RPC server")  # loopback: silent
    assert capfd.readouterr().err == ""


def test_bad_tracker_address():
    with pytest.raises(TvmflowError, match="bad tracker address"):
        rpc.parse_hostport("localhost", what="tracker address")
    with pytest.raises(TvmflowError, match="bad tracker address"):
        rpc.parse_hostport("host:99999", what="tracker address")
    assert rpc.parse_hostport("10.0.0.2:9190") == ("10.0.0.2", 9190)


def test_port_in_use_is_a_clear_error(cluster):
    with pytest.raises(TvmflowError, match=f"port {cluster.tracker_port} is already in use"):
        rpc.start_server(port=cluster.tracker_port)


def test_handshake_probe_opens_no_session_and_keeps_the_registration(cluster):
    """connect/request probe the handshake with a key no server has: a TVM server answers
    "mismatch", opens no session and stays registered and free at the tracker."""
    for proc in cluster.servers:
        assert rpc.probe_server(proc.host, proc.port, timeout=10) == "mismatch"
    time.sleep(2.5)                       # a tracker ping period of the servers
    summary = cluster.summary()
    assert sorted(s["port"] for s in rpc.servers_under(summary, KEY)) == \
        sorted(p.port for p in cluster.servers)
    assert summary["queue"][KEY]["free"] == 2
    sess = cluster.request(timeout=20)
    assert rpc.server_workdir(sess)


REQUEST_SPY = """
import sys, time
from tvmflow.adapter.rpc import session, tracker
real = session.tracker_call
def spy(host, port, message, *args, **kw):
    if message[0] == tracker.TRACKER_REQUEST:
        print("tvm.rpc imported before the request:", "tvm.rpc" in sys.modules, flush=True)
    return real(host, port, message, *args, **kw)
session.tracker_call = spy
sess = session.request("127.0.0.1", int(sys.argv[1]), sys.argv[2], timeout=120)
print("workdir:", session.server_workdir(sess), flush=True)
"""


def test_request_imports_tvm_before_a_key_is_handed_out(cluster):
    """A tracker-registered server gives a handed-out key up after ~8 s unused; importing TVM
    (seconds on a busy machine) between the hand-out and the connect made the first request
    of a fresh process fail with "cannot find server that matches key"."""
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-c", REQUEST_SPY, str(cluster.tracker_port), KEY],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "tvm.rpc imported before the request: True" in res.stdout, res.stdout
    assert "workdir: /" in res.stdout


def test_helper_processes_start_without_torch():
    """The tracker and server tvmflow starts go through tvmflow.adapter.lean, and a PopenPool
    worker of a process that called lean_workers() has torch made unimportable (import tvm
    there takes about half as long); the worker still runs what it is sent."""
    from tvm.support.popen_pool import PopenWorker
    from tvmflow.adapter.lean import lean_workers
    lean = ["-m", "tvmflow.adapter.lean"]
    assert rpc.server_command("127.0.0.1", 9)[1:4] == [*lean, "tvm.exec.rpc_server"]
    assert rpc.tracker_command("127.0.0.1", 9)[1:4] == [*lean, "tvm.exec.rpc_tracker"]
    assert rpc.server_command("127.0.0.1", 9, python=["py"])[:3] == ["py", "-m",
                                                                     "tvm.exec.rpc_server"]
    lean_workers()
    worker = PopenWorker()
    try:
        worker.send(lambda: (__import__("sys").modules.get("torch", "absent"), 6 * 7))
        assert worker.recv() == (None, 42)
    finally:
        worker.kill()
