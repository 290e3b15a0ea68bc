"""Addresses and ports: ``HOST:PORT`` parsing, loopback checks, free and listening ports."""

from __future__ import annotations

import socket
import sys

from tvmflow.errors import TvmflowError

LOOPBACK = "127.0.0.1"
_LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}
INSECURE_WARNING = ("Warning: TVM RPC has no authentication; {what} listening on {host} lets anyone "
                    "who can reach {host}:{port} run code on this machine. Bind 127.0.0.1 unless "
                    "the network is trusted.")


def parse_hostport(text: str, *, what: str = "address", default_port: int | None = None
                   ) -> tuple[str, int]:
    """``"HOST:PORT"`` -> ``(host, port)``; a bad value is a TvmflowError."""
    host, sep, port = str(text).rpartition(":")
    if not sep:
        host, port = str(text), "" if default_port is None else str(default_port)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TvmflowError(f"bad {what} {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9190")
    return host, int(port)


def is_loopback(host: str) -> bool:
    return host in _LOOPBACK_NAMES or host.startswith("127.")


def warn_if_exposed(host: str, port: int | str, what: str) -> bool:
    """Print the no-authentication warning on stderr when ``host`` is not loopback."""
    if is_loopback(host):
        return False
    print(INSECURE_WARNING.format(what=what, host=host, port=port), file=sys.stderr, flush=True)
    return True


def find_free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host if host not in ("", "0.0.0.0") else LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _listening_ports() -> set[int] | None:
    """Ports with a TCP socket in LISTEN state, from /proc/net/tcp{,6} (None off Linux)."""
    ports: set[int] = set()
    found = False
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as fh:
                next(fh)
                for line in fh:
                    parts = line.split()
                    if len(parts) > 3 and parts[3] == "0A":  # TCP_LISTEN
                        ports.add(int(parts[1].rsplit(":", 1)[1], 16))
            found = True
        except (OSError, StopIteration, ValueError):
            continue
    return ports if found else None


def is_listening(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something listens on ``port``.

    Locally this reads /proc/net/tcp instead of connecting: a probe connection makes a
    tracker-registered TVM server drop its tracker link and register again.
    """
    if is_loopback(host) or host in ("", "0.0.0.0"):
        ports = _listening_ports()
        if ports is not None:
            return port in ports
    probe = LOOPBACK if host in ("", "0.0.0.0") else host
    try:
        with socket.create_connection((probe, port), timeout=timeout):
            return True
    except OSError:
        return False


def unreachable_reason(exc: OSError) -> str:
    """Why a TCP connect failed, in a few words."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.timeout):
        return "timed out"
    return str(exc) or type(exc).__name__
