"""The board package, part by part, without qemu: paths, state records and store, setup
marker, the root's users (mounts are kept while a board of another state directory uses the
root), process liveness, host checks.  Everything under tmp_path (a fake cache)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tvmflow import board
from tvmflow.board import builder, host, mounts, paths, supervisor
from tvmflow.board.state import BoardInfo, BoardState, Reservation, StateStore, TrackerEntry
from tvmflow.errors import TvmflowError


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fake TVMFLOW_CACHE_DIR with no state-dir override."""
    monkeypatch.setenv("TVMFLOW_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(paths.STATE_ENV, raising=False)
    return tmp_path / "cache"


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def _info(name="a", pid=1, **kw) -> BoardInfo:
    return BoardInfo(name=name, key="k", host="127.0.0.1", port=9091, pid=pid,
                     tracker="127.0.0.1:9190", tracker_owned=True, log="l", root="r", **kw)


def test_state_dir_parameter_then_environment_then_cache(cache, tmp_path, monkeypatch):
    assert paths.state_dir() == cache / "board"
    monkeypatch.setenv(paths.STATE_ENV, str(tmp_path / "env-state"))
    assert paths.state_dir() == tmp_path / "env-state"
    assert paths.state_dir(tmp_path / "mine") == tmp_path / "mine"
    assert StateStore().path == tmp_path / "env-state" / "state.json"
    assert paths.rootfs() == cache / "board" / "arm64-bookworm" / "rootfs"   # the root stays shared


def test_state_round_trip_and_records(tmp_path):
    store = StateStore(tmp_path / "s")
    assert store.read() == BoardState()                 # nothing written yet
    with store.locked() as state:
        state.boards["a"] = _info(threads=4)
        state.tracker = TrackerEntry(123, "127.0.0.1", 9190, "t.log")
        state.starting["b"] = Reservation(os.getpid(), "127.0.0.1:9190")
    again = store.read()
    assert again.boards["a"] == _info(threads=4, started=again.boards["a"].started)
    assert again.tracker.address == "127.0.0.1:9190" and again.starting["b"].owner == os.getpid()
    assert json.loads(store.path.read_text())["boards"]["a"]["threads"] == 4
    assert not list(store.dir.glob("*.tmp"))             # written atomically
    with pytest.raises(RuntimeError):                   # an error inside the block: not written
        with store.locked() as state:
            state.boards.clear()
            raise RuntimeError("boom")
    assert "a" in store.read().boards


def test_state_reads_the_old_format_and_survives_garbage(tmp_path):
    store = StateStore(tmp_path)
    old = {"boards": {"emu0": _info("emu0").to_json()}, "starting": {},
           "tracker": {"kind": "tracker", "pid": 7, "host": "127.0.0.1", "port": 9190,
                       "log": None, "key": None, "tracker": None}}
    store.path.write_text(json.dumps(old))
    state = store.read()
    assert state.tracker == TrackerEntry(7, "127.0.0.1", 9190, None)
    assert state.boards["emu0"].name == "emu0"
    store.path.write_text("{not json")
    assert store.read() == BoardState()


def test_dead_reservations_and_boards_do_not_count(tmp_path, sleeper):
    state = BoardState({"a": _info(pid=sleeper.pid)},
                       starting={"x": Reservation(sleeper.pid, "t:1"), "y": Reservation(2 ** 22 + 1, "t:1")})
    assert list(state.live_reservations()) == ["x"]
    assert state.live_boards() == []                    # a live pid that is no RPC server


def test_liveness_checks_the_command_line(sleeper):
    assert not supervisor.server_alive(sleeper.pid) and not supervisor.tracker_alive(sleeper.pid)
    assert not supervisor.server_alive(2 ** 22 + 1)


def test_setup_marker_round_trip_and_checks(cache):
    assert builder.read_marker() is None
    marker = builder.SetupMarker(paths.SETUP_FORMAT, "bookworm", "arm64", "http://m", [], 
                                 list(paths.REQUIREMENTS), ["w.whl"], "3.11.2", "0.27", "2",
                                 paths.VENV, 1.0, "now")
    paths.root_home().mkdir(parents=True)
    paths.marker_path().write_text(json.dumps(marker.to_json()))
    assert builder.read_marker() is None                # no venv python in the root
    py = paths.rootfs() / paths.VENV.lstrip("/") / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text("")
    assert builder.read_marker() == marker
    paths.marker_path().write_text(json.dumps(dict(marker.to_json(), requirements=["other"])))
    assert builder.read_marker() is None                # another tvmflow's requirements
    data = marker.to_json()
    del data["tvm"]
    with pytest.raises(ValueError, match="lacks tvm"):
        builder.SetupMarker.from_json(data)


def test_root_users_drop_dead_processes(cache, sleeper):
    with mounts.root_users() as users:
        users["dead"] = mounts.RootUser(2 ** 22 + 1, "/x", "dead")
        users["live"] = mounts.RootUser(sleeper.pid, "/x", "live")
    with mounts.root_users() as users:
        assert list(users) == ["live"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_release_keeps_the_root_while_another_state_uses_it(cache, tmp_path, sleeper):
    """The developer's board (another state dir, alive) keeps the mounts when a test's board
    goes; the mounts go with the last user."""
    paths.rootfs().mkdir(parents=True)
    dev = mounts.RootUser(sleeper.pid, str(tmp_path / "developer"), "emu0")
    mine = mounts.RootUser(os.getpid(), str(tmp_path / "test"), "pytest-a")
    try:
        mounts.claim_root(dev)
        mounts.claim_root(mine)
        assert len(mounts.mounts_under()) == 3
        mounts.release_root([mine.token])
        assert len(mounts.mounts_under()) == 3 and mounts.root_in_use()
        sleeper.kill()
        sleeper.wait()
        mounts.release_root([])
        assert mounts.mounts_under() == [] and not mounts.root_in_use()
    finally:
        mounts.unmount_root()


def test_stop_of_an_unknown_board_names_the_known_ones(tmp_path):
    with StateStore(tmp_path).locked() as state:
        state.boards["a"] = _info("a")
    with pytest.raises(TvmflowError, match=r"no board named 'b' \(boards: a\)"):
        board.stop("b", state_dir=tmp_path)
    assert board.running_boards(tmp_path) == []         # recorded, but its server is not alive


def test_missing_tool_names_the_apt_package(monkeypatch):
    monkeypatch.setattr(host, "TOOLS", host.TOOLS + (("no-such-tool-xyz", "xyz-tools"),))
    with pytest.raises(TvmflowError, match=r"no-such-tool-xyz.*apt-get install -y xyz-tools"):
        board.check_tools()


def test_debian_mirror_from_apt_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n\n"
        "Types: deb deb-src\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main\n")
    assert board.debian_mirror(tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list.d" / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text(
        "deb [arch=amd64 signed-by=/k.gpg] http://ftp.example.org/debian bookworm main\n")
    assert board.debian_mirror(tmp_path) == "http://ftp.example.org/debian"
    (tmp_path / "sources.list").write_text("deb http://archive.ubuntu.com/ubuntu noble main\n")
    with pytest.raises(TvmflowError, match="found no Debian archive"):
        board.debian_mirror(tmp_path)


def test_status_of_an_empty_state_dir(cache, tmp_path):
    st = board.status(tmp_path / "nothing")
    assert st.boards == [] and st.tracker is None and not st.setup_complete
    out = st.to_json()
    assert out["state_dir"] == str(tmp_path / "nothing") and out["setup_complete"] is False
    json.dumps(out)


def test_setup_builds_in_order_and_writes_the_marker_last(cache, monkeypatch):
    """The builder's steps with the commands faked: debootstrap into rootfs.partial, wheels,
    venv, the probe; then the rename and the marker (last), which read_marker accepts."""
    calls = []

    def fake_run(cmd, what, log=None, timeout=1800, env=None):
        calls.append(what)
        assert not paths.marker_path().exists()          # the marker comes last
        if what == "debootstrap (first stage)":
            (paths.root_home() / "rootfs.partial" / "usr" / "bin").mkdir(parents=True)
        elif what.startswith("pip download"):
            (paths.root_home() / "wheels" / "apache_tvm-0.27.0.post1-aarch64.whl").write_text("")
        elif what == "python3 -m venv":
            py = Path(cmd[1]) / paths.VENV.lstrip("/") / "bin" / "python"
            py.parent.mkdir(parents=True)
            py.write_text("")
        elif what == "import tvm inside the root":
            return "aarch64\n3.11.2\n0.27.0.post1\n2.4.6\n"
        return ""
    for name in ("check_tools", "ensure_binfmt", "need_root", "mount_root", "unmount_root",
                 "kill_root_processes"):
        monkeypatch.setattr(builder, name, lambda *a, **k: None)
    monkeypatch.setattr(builder, "binfmt_fixes_binary", lambda: True)
    monkeypatch.setattr(builder, "run", fake_run)
    info = builder.setup(force=True, mirror="http://mirror.example/debian")
    assert calls == ["debootstrap (first stage)", "debootstrap (second stage)",
                     "pip download of the aarch64 wheels", "python3 -m venv",
                     "pip install in the root", "import tvm inside the root"]
    assert not info.reused and info.marker.tvm == "0.27.0.post1" and info.marker.python == "3.11.2"
    assert info.marker.wheels == ["apache_tvm-0.27.0.post1-aarch64.whl"]
    assert paths.rootfs().is_dir() and not (paths.root_home() / "rootfs.partial").exists()
    assert builder.read_marker() == info.marker
    again = builder.setup()                              # reused, nothing run
    assert again.reused and len(calls) == 6


def test_setup_refuses_a_root_that_does_not_run_aarch64(cache, monkeypatch):
    def fake_run(cmd, what, log=None, timeout=1800, env=None):
        if what == "debootstrap (first stage)":
            (paths.root_home() / "rootfs.partial").mkdir(parents=True)
        return "x86_64\n3.11.2\n0.27\n2\n" if what == "import tvm inside the root" else ""
    for name in ("check_tools", "ensure_binfmt", "need_root", "mount_root", "unmount_root",
                 "kill_root_processes"):
        monkeypatch.setattr(builder, name, lambda *a, **k: None)
    monkeypatch.setattr(builder, "binfmt_fixes_binary", lambda: True)
    monkeypatch.setattr(builder, "run", fake_run)
    with pytest.raises(TvmflowError, match="runs as x86_64, not aarch64"):
        builder.setup(force=True, mirror="http://m")
    assert builder.read_marker() is None and not paths.rootfs().exists()


def test_cli_state_dir_option_and_stop_error(cache, tmp_path):
    with StateStore(tmp_path / "cli-state").locked() as state:
        state.boards["a"] = _info("a")
    env = dict(os.environ, COLUMNS="200")
    res = subprocess.run([sys.executable, "-m", "tvmflow", "board", "--state-dir",
                          str(tmp_path / "cli-state"), "status", "--json"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    st = json.loads(res.stdout)
    assert st["state_dir"] == str(tmp_path / "cli-state")
    assert [(b["name"], b["alive"], b["registered"]) for b in st["boards"]] == [("a", False, None)]
    res = subprocess.run([sys.executable, "-m", "tvmflow", "board", "--state-dir",
                          str(tmp_path / "cli-state"), "stop", "--name", "b"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 2 and "Error: no board named 'b' (boards: a)" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.fixture
def fakes():
    """Stand-ins (sleepers in sessions of their own) whose command lines say RPC server or
    tracker, as the liveness checks read them."""
    procs = []

    def start(module: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", module],
                                start_new_session=True)
        procs.append(proc)
        return proc
    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_stop_takes_the_owned_tracker_with_its_last_board_and_leaves_others(cache, tmp_path,
                                                                           fakes):
    """Stopping boards stops the tracker `board start` started, once no board of the state
    uses it any more, and never a tracker the boards were only registered with."""
    import time as _time
    external, owned = fakes(supervisor.TRACKER_MODULE), fakes(supervisor.TRACKER_MODULE)
    a, b = fakes(supervisor.SERVER_MODULE), fakes(supervisor.SERVER_MODULE)
    _time.sleep(0.3)                                    # their command lines are set
    with StateStore(tmp_path).locked() as state:
        state.boards["a"] = BoardInfo("a", "k", "127.0.0.1", 1, a.pid, "127.0.0.1:9", False,
                                      "l", "r")
        state.boards["b"] = BoardInfo("b", "k", "127.0.0.1", 2, b.pid, "127.0.0.1:8", True,
                                      "l", "r")
        state.tracker = TrackerEntry(owned.pid, "127.0.0.1", 8, None)
    assert board.stop("a", state_dir=tmp_path) == ["a"]
    assert a.wait(10) is not None and owned.poll() is None and external.poll() is None
    assert board.stop("b", state_dir=tmp_path) == ["b"]          # the owned tracker's last board
    assert b.wait(10) is not None and owned.wait(10) is not None
    assert external.poll() is None                      # registered with, never started: left
    assert StateStore(tmp_path).read().tracker is None
