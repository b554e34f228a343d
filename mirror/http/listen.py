"""Listeners: the addresses the daemon accepts connections on, for the main routes and,
with `[server] admin_listen`, for the admin routes.

A TCP listener serves TLS when a context is given. A unix socket (`unix:/path`, admin
only) is created with mode 0600 (threat-model A4): it is bound, chmod-ed, and only then
listened on, so no connection is accepted before the mode is right. A socket file left
by a daemon that died is replaced; one another process still listens on is not, and
neither is a path that is not a socket. The socket file is removed at shutdown, if it is
still the one this daemon created.

Bind failures are one line naming the address and the reason.
"""

from __future__ import annotations

import os
import socket
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from mirror.errors import ConfigError, MirrorError


@dataclass
class Listener:
    site: web.BaseSite
    url: str  # for the log: "https://127.0.0.1:8090", "unix:/run/mirror/admin.sock"
    port: int = 0  # the bound TCP port (port 0 in the config picks one)
    unix_path: Path | None = None
    unix_inode: int = 0

    def remove_socket(self) -> None:
        """Delete the unix socket file, after the site has stopped."""
        if self.unix_path is None:
            return
        try:
            if os.lstat(self.unix_path).st_ino == self.unix_inode:
                os.unlink(self.unix_path)
        except FileNotFoundError:
            pass


def _reason(exc: OSError) -> str:
    # asyncio's strerror repeats the address; the errno's text is the reason.
    return os.strerror(exc.errno) if exc.errno and exc.errno > 0 else (exc.strerror or str(exc))


def _url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


async def listen_tcp(runner: web.BaseRunner, host: str, port: int, tls: ssl.SSLContext | None) -> Listener:
    site = web.TCPSite(runner, host, port, ssl_context=tls, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        raise MirrorError(f"cannot listen on {host}:{port}: {_reason(exc)}") from None
    bound = site.port  # the real port once started (port 0 picks a free one)
    return Listener(site, _url("https" if tls else "http", host, bound), bound)


async def listen_unix(runner: web.BaseRunner, path: Path) -> Listener:
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound = False
    try:
        sock.bind(str(path))
        bound = True
        os.chmod(path, 0o600)  # before listen(): until then every connect is refused
        inode = os.lstat(path).st_ino
        site = web.SockSite(runner, sock)
        await site.start()
    except OSError as exc:
        sock.close()
        if bound:
            os.unlink(path)
        raise MirrorError(f"cannot listen on unix:{path}: {_reason(exc)}") from None
    return Listener(site, f"unix:{path}", unix_path=path, unix_inode=inode)


async def listen(runner: web.BaseRunner, spec: str, tls: ssl.SSLContext | None) -> Listener:
    """Listen on `spec`: "host:port", "[v6]:port" or "unix:/path" (validated by config)."""
    if spec.startswith("unix:"):
        return await listen_unix(runner, Path(spec[5:]))
    host, _, port = spec.rpartition(":")
    return await listen_tcp(runner, host.strip("[]"), int(port), tls)


def _clear_stale(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise MirrorError(f"cannot listen on unix:{path}: {_reason(exc)}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(f"cannot listen on unix:{path}: the path exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        os.unlink(path)  # left by a daemon that is gone
        return
    except OSError as exc:
        raise MirrorError(f"cannot listen on unix:{path}: {_reason(exc)}") from None
    finally:
        probe.close()
    raise MirrorError(f"cannot listen on unix:{path}: another process is listening there")
