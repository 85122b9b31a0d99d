"""Before anything starts: is every address the service will listen on free?

gRPC's own bind failure is a C-core log line and a traceback ending in "Failed to bind", after
the store and scheduler have started. Probing first gives one line that names the setting to
change. A process that takes the port between the probe and the bind still gets a clear error
from `GrpcServer.bind`, only later.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import fields

from .config import Settings, env_name, flag_name, parse_host_port

__all__ = ["AddressUnavailable", "check_listen_addresses", "listen_settings"]


class AddressUnavailable(OSError):
    """An address cannot be listened on; the message names the setting."""


def listen_settings(settings: Settings) -> list[tuple[str, str]]:
    """(setting name, address) of every listening setting that is on: `listen` and each `*_listen`."""
    out = []
    for f in fields(settings):
        if f.name == "listen" or f.name.endswith("_listen"):
            value = getattr(settings, f.name)
            if value:
                out.append((f.name, value))
    return out


def describe(name: str, address: str, problem: str) -> str:
    return (
        f"{name}={address}: {problem}; stop what listens there, or choose another address with "
        f"{flag_name(name)} (or {env_name(name)})"
    )


def check_listen_addresses(settings: Settings) -> None:
    """Raise AddressUnavailable for the first listening setting whose address cannot be bound."""
    seen: set[tuple[str, int]] = set()
    for name, address in listen_settings(settings):
        host, port = parse_host_port(address)
        if port == 0:
            continue  # any free port
        if (host, port) in seen:
            raise AddressUnavailable(describe(name, address, "is also the address of another listening setting"))
        seen.add((host, port))
        problem = _bind_problem(host, port)
        if problem:
            raise AddressUnavailable(describe(name, address, problem))


def _bind_problem(host: str, port: int) -> str | None:
    """None when at least one of the host's addresses can be bound (as gRPC needs), else why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve {host}: {exc.strerror}"
    problems = []
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            # As gRPC and aiohttp do: a port in TIME_WAIT is free, a port with a listener is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
                return None
            except OSError as exc:
                problems.append(exc)
    if any(p.errno == errno.EADDRINUSE for p in problems):
        return "address already in use (another process listens there)"
    first = problems[0] if problems else None
    return f"cannot listen there ({first.strerror if first else 'no address'})"
