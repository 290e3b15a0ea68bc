"""Ctrl-C, SIGTERM and SIGHUP stop every long command quickly, keep what was measured and
leave no process behind.

Each case runs the real ``tvmflow`` in a subprocess (a session and process group of its
own, as a shell job has), waits until it is measuring (a progress line, or records in the
tuning log), and sends one signal the way it comes in real life: SIGINT and SIGHUP to the
process group (a terminal's Ctrl-C / hang-up), SIGTERM to the process (``kill``,
``timeout``, a CI runner).  Then it checks that the command says ``Error: interrupted``
within :data:`STOP_S` and exits within :data:`EXIT_S`, with EXIT_INTERRUPTED, that one error
line and no traceback; that what was measured is kept (the partial report, the tuning log);
and that none of the processes it started (RPC tracker, RPC server, their popen workers,
MetaSchedule's builders and runner) is left.

The compiled modules are shared (conftest's ``artifacts``); every case pays for its own
start-up (importing TVM, starting a tracker and a server), so the matrix is kept small:
compare (through the RPC server it starts) with each signal, bench in this process (TVM's
timing loop in C++ here), and tune (which stops after the batch being measured).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from tvmflow.errors import EXIT_INTERRUPTED

# from the signal to the "Error: interrupted" line (the cleanup is done by then) and to the
# exit (typically 0.3 s and 0.5 s; the bounds leave room for a loaded machine)
STOP_S, EXIT_S = 3.0, 5.0
START_S = 400.0         # from the start to "measuring" (start-up is slow on a loaded machine)
VARIANT = "pruned-a8"
# bench/compare: rounds of ~0.5 s (40 rounds: still measuring long after round 1); in this
# process rounds of ~8 s, each of which must be cut short (TVM's C++ timing loop holds a
# signal until it returns)
MEASURE = {"rpc": ["--min-time", "20", "--max-time", "40", "--rounds", "40"],
           "local": ["--min-time", "80", "--max-time", "160", "--rounds", "10"]}


class Run:
    """``python -m tvmflow ARGS`` in a new session; its output lines collected as they come."""

    def __init__(self, args: list[str], env: dict[str, str]):
        self.proc = subprocess.Popen([sys.executable, "-m", "tvmflow", *args], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self.readers = [threading.Thread(target=self._read, args=(name,), daemon=True)
                        for name in self.lines]
        for t in self.readers:
            t.start()
        self.seen: dict[int, psutil.Process] = {}
        self.error_at = self.round_at = self.sent_at = None

    def _read(self, name: str) -> None:
        for line in getattr(self.proc, name):
            self.lines[name].append(line)
            if line.startswith("Error:"):
                self.error_at = time.monotonic()

    def text(self, name: str) -> str:
        return "".join(self.lines[name])

    def note_descendants(self) -> None:
        """Remember every process started below tvmflow so far (they may leave its group)."""
        try:
            for p in psutil.Process(self.proc.pid).children(recursive=True):
                self.seen.setdefault(p.pid, p)
        except psutil.NoSuchProcess:
            pass

    def wait_for(self, ready, timeout: float = START_S) -> None:
        deadline = time.monotonic() + timeout
        while not ready(self):
            assert self.proc.poll() is None, f"ended before measuring:\n{self.text('stderr')[-3000:]}"
            assert time.monotonic() < deadline, f"not measuring after {timeout:g} s"
            self.note_descendants()
            time.sleep(0.2)
        self.note_descendants()

    def left_over(self) -> list[str]:
        """Processes still alive that tvmflow started, or that are in its process group."""
        left = {p.pid: p for p in self.seen.values() if _alive(p)}
        for p in psutil.process_iter():
            try:
                if os.getpgid(p.pid) == self.proc.pid and _alive(p):
                    left[p.pid] = p
            except (ProcessLookupError, psutil.Error):
                continue
        return [f"{pid} {' '.join(_cmdline(p))[:120]}" for pid, p in left.items()]

    def kill_all(self) -> None:
        """After a failure: nothing of this run may outlive the test."""
        if self.proc.poll() is None:
            self.proc.kill()
        for p in self.seen.values():
            try:
                p.kill()
            except psutil.Error:
                pass


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return ["?"]


def _env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TVMFLOW_MODEL_PATH", "TVM_TRACKER_HOST", "TVM_TRACKER_PORT",
                        "TVM_TRACKER_KEY")}
    env["COLUMNS"] = "200"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _send(run: Run, sig: signal.Signals) -> None:
    if sig == signal.SIGTERM:
        os.kill(run.proc.pid, sig)          # kill / timeout / CI: the process only
    else:
        os.killpg(run.proc.pid, sig)        # a terminal: its whole foreground group


def _round_done(run: Run) -> bool:
    """Round 1 is over, and the next has run for a second (a signal then lands mid-round,
    not while the partial report is being saved)."""
    if "round 1/" not in run.text("stderr"):
        return False
    if run.round_at is None:
        run.round_at = time.monotonic()
    return time.monotonic() - run.round_at > 1.0


# ----------------------------------------------------------------------------- the cases


def _bench_case(command: str, via: str, artifacts: Path, tmp_path: Path):
    out = tmp_path / "out"
    run = Run([command, "-v", VARIANT, "--via", via, "--warmup", "1", "--min-repeats", "4",
               "--no-baselines", *MEASURE[via], "-o", str(out)],
              _env(TVMFLOW_ARTIFACTS_DIR=artifacts))
    started = {"server": False}

    def ready(r: Run) -> bool:
        if via == "rpc":   # the tracker, the server and their workers are up by round 1
            started["server"] |= any("tvm.exec.rpc_server" in " ".join(_cmdline(p))
                                     for p in r.seen.values())
        return _round_done(r)

    def kept(r: Run) -> None:
        partial = out / "report.partial.json"
        assert f"the partial results measured so far are in {partial}" in r.text("stderr")
        data = json.loads(partial.read_text())
        assert data["partial"] is True and data["error"] == "interrupted"
        assert data["results"][0]["latency"]["tvm"]["n"] >= 4       # round 1 at least
        assert not (out / "report.json").exists()
        if via == "rpc":
            assert started["server"], "no RPC server was started: nothing to check"
    return run, ready, kept


def _tune_case(tmp_path: Path):
    from tvmflow.tuning import schedules as S
    root = tmp_path / "schedules"
    log = S.schedule_dir("host", VARIANT, root)
    run = Run(["tune", "-v", VARIANT, "--fresh", "--trials", "400", "--per-round", "2",
               "--workers", "1"],
              _env(TVMFLOW_SCHEDULES=root))
    at_signal = {"n": 0}

    def ready(r: Run) -> bool:
        at_signal["n"] = S.record_count(log) if log.exists() else 0
        return at_signal["n"] > 0

    def kept(r: Run) -> None:
        assert S.record_count(log) >= at_signal["n"] > 0
        assert S.read_meta(log)["interrupted"] is True, r.text("stderr")[-3000:]
        assert f"records kept in {log}" in r.text("stderr")
    return run, ready, kept


CASES = [("compare", "SIGINT"), ("compare", "SIGTERM"), ("compare", "SIGHUP"),
         ("bench-local", "SIGTERM"), ("tune", "SIGTERM")]


@pytest.mark.parametrize("command,signame", CASES, ids=[f"{c}-{s}" for c, s in CASES])
def test_signal_stops_command_keeps_results_and_leaves_no_process(command, signame, request,
                                                                  tmp_path):
    sig = signal.Signals[signame]
    if command == "tune":
        run, ready, kept = _tune_case(tmp_path)
        stop_s = STOP_S + 25.0    # tune stops after the batch being measured (two candidates)
    else:
        run, ready, kept = _bench_case("compare" if command == "compare" else "bench",
                                       "rpc" if command == "compare" else "local",
                                       request.getfixturevalue("artifacts"), tmp_path)
        stop_s = STOP_S
    try:
        run.wait_for(ready)
        took = _stop(run, sig, stop_s + EXIT_S - STOP_S)
        err = run.text("stderr")
        why = f"{command} after {signame} ({took:.1f} s): {err[-3000:]}"
        assert run.error_at is not None and run.error_at - run.sent_at < stop_s, why
        assert run.proc.returncode == EXIT_INTERRUPTED, why
        assert "Traceback" not in err, why
        errors = [ln for ln in err.splitlines() if ln.startswith("Error:")]
        assert len(errors) == 1 and errors[0].startswith("Error: interrupted"), why
        kept(run)
        time.sleep(0.5)            # a killed process needs a moment to be reaped
        left = run.left_over()
        assert left == [], f"left behind: {left}; {why}"
    finally:
        run.kill_all()


def _stop(run: Run, sig: signal.Signals, bound: float) -> float:
    """Send ``sig``; the seconds until the process ended (fails past ``bound``)."""
    assert run.proc.poll() is None
    sent = run.sent_at = time.monotonic()
    _send(run, sig)
    try:
        run.proc.wait(timeout=bound)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {bound:g} s after {sig.name}: "
                    f"{run.text('stderr')[-2000:]}")
    took = time.monotonic() - sent
    for t in run.readers:
        t.join(5)
    said = "-" if run.error_at is None else f"{run.error_at - sent:.1f}"
    print(f"{sig.name}: Error line {said} s and exit {took:.1f} s after it", file=sys.stderr)
    return took


# ----------------------------------------------------------------------------- in this process


@pytest.fixture
def installed():
    from tvmflow import signals
    previous = signals.install()
    try:
        yield signals
    finally:
        signals.restore(previous)
        signals.reset()


def _quietly(sig: signal.Signals, signals) -> None:
    """Deliver ``sig``, which must not raise (a raise here would stop the whole session)."""
    try:
        signal.raise_signal(sig)
    except signals.Interrupted:
        pytest.fail(f"{sig.name} raised Interrupted")


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_each_stop_signal_is_one_interruption(installed, signame):
    sig = signal.Signals[signame]
    with pytest.raises(installed.Interrupted) as caught:
        signal.raise_signal(sig)
    assert caught.value.signum == sig and isinstance(caught.value, KeyboardInterrupt)
    assert installed.received() == sig
    with pytest.raises(installed.Interrupted):       # a loop that carried on stops here
        installed.check()


def test_second_signal_during_cleanup_is_ignored_then_raises_again(installed, monkeypatch):
    with pytest.raises(installed.Interrupted):
        signal.raise_signal(signal.SIGINT)
    _quietly(signal.SIGTERM, installed)               # within GRACE_S: the cleanup goes on
    monkeypatch.setattr(installed, "GRACE_S", 0.0)
    with pytest.raises(installed.Interrupted) as caught:
        signal.raise_signal(signal.SIGTERM)           # the first one was swallowed somewhere
    assert installed.received() == signal.SIGINT and caught.value.signum == signal.SIGTERM


def test_sigterm_and_sighup_follow_a_commands_own_ctrl_c_handler(installed):
    seen = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:                                              # tune: stop after the batch
        _quietly(signal.SIGTERM, installed)
        _quietly(signal.SIGHUP, installed)
    finally:
        signal.signal(signal.SIGINT, old)
    assert seen == [signal.SIGTERM, signal.SIGHUP] and installed.received() is None


def test_restore_puts_back_the_handlers_and_an_ignored_sighup_stays_ignored():
    from tvmflow import signals
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # nohup
    try:
        before = {s: signal.getsignal(s) for s in signals.STOP_SIGNALS}
        previous = signals.install()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
        signals.restore(previous)
        assert {s: signal.getsignal(s) for s in signals.STOP_SIGNALS} == before
    finally:
        signal.signal(signal.SIGHUP, old)


def test_an_error_caused_by_a_signal_ends_as_interrupted(capsys):
    """TVM may turn the signal into a RuntimeError, and tvmflow that into a TvmflowError."""
    from tvmflow import signals
    from tvmflow.cli import cli, main
    from tvmflow.errors import TvmflowError

    @cli.command("signal-test")
    def _command():
        try:
            signal.raise_signal(signal.SIGTERM)
        except signals.Interrupted:
            signals.kept("the partial results measured so far are in X")
            raise TvmflowError("timing failed on the RPC server") from None
    try:
        assert main(["signal-test"]) == EXIT_INTERRUPTED
    finally:
        cli.commands.pop("signal-test")
        signals.reset()
    err = capsys.readouterr().err
    assert err.strip() == ("Error: interrupted; the partial results measured so far are in X")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL    # main() put it back
