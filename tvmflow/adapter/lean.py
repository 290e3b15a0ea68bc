"""TVM's helper processes without PyTorch: ``python -m tvmflow.adapter.lean MODULE ARGS...``.

``import tvm`` imports torch whenever it can (tvm_ffi does, for DLPack), and that is about
half of its ~5 s on 2 cores.  The processes TVM starts beside tvmflow never use torch: the
RPC tracker and server tvmflow starts, and the PopenPool workers behind MetaSchedule's
builders and runners and behind a tracker or server (``python -m tvm.exec.popen_worker``).
This launcher runs such a module as ``__main__`` with torch made unimportable (tvm_ffi then
skips it), and :func:`lean_workers` makes a process start its own PopenPool workers through
it.  The workers of a tune start in about half the time, and so does a loopback RPC server.
"""

from __future__ import annotations

import subprocess
import sys

WORKER = "tvm.exec.popen_worker"
LAUNCHER = "tvmflow.adapter.lean"        # this module (its __name__ is __main__ when run)


class _LeanSubprocess:
    """What ``tvm.support.popen_pool`` sees as ``subprocess``: the same module, except that a
    PopenWorker's command goes through this launcher."""

    def __getattr__(self, name: str):
        return getattr(subprocess, name)

    @staticmethod
    def Popen(cmd, *args, **kwargs):  # noqa: N802 - stands in for subprocess.Popen
        cmd = list(cmd)
        if cmd[1:3] == ["-m", WORKER]:
            cmd = [cmd[0], "-m", LAUNCHER, WORKER, *cmd[3:]]
        return subprocess.Popen(cmd, *args, **kwargs)


def lean_workers() -> None:
    """PopenPool workers started by this process from now on run without torch."""
    from tvm.support import popen_pool
    if not isinstance(popen_pool.subprocess, _LeanSubprocess):
        popen_pool.subprocess = _LeanSubprocess()


def command(module: str, *args: str) -> list[str]:
    """The command line that runs ``python -m module args`` through this launcher."""
    return [sys.executable, "-m", LAUNCHER, module, *args]


def main() -> None:
    import runpy
    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m tvmflow.adapter.lean MODULE [ARGS...]")
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    sys.modules["torch"] = None          # `import torch` raises ImportError from here on
    lean_workers()
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
