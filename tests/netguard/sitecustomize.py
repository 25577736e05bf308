"""Refuse every non-loopback connection (and name lookup) in this Python process, and log each attempt.

Loaded at interpreter start when this folder is on PYTHONPATH (Python imports ``sitecustomize``), so
it covers every process a test starts: dvc and each stage it runs. An attempt raises ``OSError`` (as
an unreachable network would) and appends ``<argv> -> <address>`` to ``$NEGOPT_NETGUARD_LOG``, so a
library that swallows the error still shows up in the log.
"""

import ipaddress
import os
import socket
import sys

_LOG = os.environ.get("NEGOPT_NETGUARD_LOG", "")
_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def _loopback_host(host) -> bool:
    if host in (None, "localhost", b"localhost"):
        return True
    if isinstance(host, bytes):
        host = host.decode()
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: resolving it would already be a network lookup
        return False


def _loopback(sock: socket.socket, address) -> bool:
    if sock.family == getattr(socket, "AF_UNIX", None):
        return True
    return _loopback_host(address[0] if isinstance(address, tuple) else address)


def _refuse(address) -> None:
    if _LOG:
        with open(_LOG, "a") as f:
            f.write(f"{' '.join(sys.argv)[:200]} -> {address!r}\n")
    raise OSError(101, f"negopt netguard: connection to {address!r} refused (only loopback is allowed)")


def connect(self, address):
    if not _loopback(self, address):
        _refuse(address)
    return _connect(self, address)


def connect_ex(self, address):
    if not _loopback(self, address):
        _refuse(address)
    return _connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):
    if not _loopback_host(host):
        _refuse(host)
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
