"""TVM RPC: trackers and servers as subprocesses, sessions with bounded waits.

The only package that touches ``tvm.rpc``.  Its modules, from the bottom up:

* :mod:`.net` -- ``HOST:PORT`` parsing, loopback checks, free / listening ports;
* :mod:`.procs` -- process groups: :func:`spawn` in a new session, :func:`kill_group`, pid
  helpers, and the two guards (parent-death signal, watchdog) that take a tracker or server
  started for one command down with tvmflow, even when it is killed by SIGKILL;
* :mod:`.tracker` -- the tracker client (summary, servers under a key, registration);
* :mod:`.servers` -- :func:`start_tracker` / :func:`start_server`;
* :mod:`.session` -- :func:`connect`, :func:`request`, :func:`upload_module` and queries, each
  under a deadline, the RPC handshake included;
* :mod:`.local` -- :func:`local_rpc`: a loopback tracker + servers for one command.

Every name other modules use is importable from here.
"""

from tvmflow.adapter.rpc.local import LocalRpc, local_rpc
from tvmflow.adapter.rpc.net import (INSECURE_WARNING, LOOPBACK, find_free_port, is_listening, is_loopback,
                  parse_hostport, warn_if_exposed)
from tvmflow.adapter.rpc.procs import (WATCHDOG, RpcProcess, group_pids, kill_group, pid_alive, pid_cmdline, spawn,
                    tail)
from tvmflow.adapter.rpc.servers import server_command, start_server, start_tracker, tracker_command
from tvmflow.adapter.rpc.session import (call_with_deadline, connect, num_threads, probe_server, remote_errors,
                      request, server_workdir, upload_module)
from tvmflow.adapter.rpc.tracker import count_servers, servers_under, tracker_summary, wait_registered

__all__ = [
    "INSECURE_WARNING", "LOOPBACK", "LocalRpc", "RpcProcess", "WATCHDOG", "call_with_deadline",
    "connect", "count_servers", "find_free_port", "group_pids", "is_listening", "is_loopback",
    "kill_group", "local_rpc", "num_threads", "parse_hostport", "pid_alive", "pid_cmdline",
    "probe_server", "remote_errors", "request", "server_command", "server_workdir", "servers_under",
    "spawn", "start_server", "start_tracker", "tail", "tracker_command", "tracker_summary",
    "upload_module", "wait_registered", "warn_if_exposed",
]
