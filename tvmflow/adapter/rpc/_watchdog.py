"""The watchdog of the RPC processes tvmflow starts for one command (run as a script).

tvmflow starts it once per process with a pipe on its stdin and writes ``+PGID`` / ``-PGID``
lines to it as it starts and stops trackers and servers.  When tvmflow dies -- normally, on a
signal, or by SIGKILL -- the kernel closes the pipe; the watchdog then reads EOF and kills the
process groups still registered (SIGTERM, then SIGKILL after a grace period), servers' session
workers included, and exits.  It runs in its own session and ignores SIGINT and SIGHUP, so a
Ctrl-C or a closed terminal reaches tvmflow and not it.  Only the standard library: it starts
in a few milliseconds and never imports tvmflow or TVM.
"""

import os
import signal
import sys
import time

GRACE = 2.0


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_groups(groups, sig) -> None:
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def kill_groups(groups, grace: float = GRACE) -> None:
    """SIGTERM each group, SIGKILL what is left after ``grace`` seconds."""
    groups = [g for g in groups if _group_alive(g)]
    _signal_groups(groups, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        groups = [g for g in groups if _group_alive(g)]
        if not groups:
            return
        time.sleep(0.05)
    _signal_groups(groups, signal.SIGKILL)


def main() -> None:
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    groups: set[int] = set()
    for line in sys.stdin.buffer:          # ends when every writer (tvmflow) is gone
        text = line.strip().decode("ascii", "replace")
        if len(text) > 1 and text[1:].isdigit() and int(text[1:]) > 1:
            (groups.add if text[0] == "+" else groups.discard)(int(text[1:]))
    kill_groups(sorted(groups))


if __name__ == "__main__":
    main()
