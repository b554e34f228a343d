"""Redirect target checks (threat-model T12): a redirect may only lead to an http(s) URL
whose host resolves to public addresses, unless the operator allows private ones (a LAN
upstream, or tests on loopback). The upstream host itself was configured by an admin and
is always allowed."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from mirror.errors import RedirectRefused, UpstreamError

# Named in every refusal, so an operator with a LAN Hub or an internal CDN finds the switch.
_ALLOW_HINT = "set upstream.allow_private_redirects = true to allow it"


def _is_internal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast or ip.is_unspecified


async def check_redirect_target(url: str, *, allow_private: bool, base_host: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RedirectRefused("upstream redirected to a non-http URL; refused")
    if parts.netloc == base_host or allow_private:
        return
    host = parts.hostname
    try:
        ips = [ipaddress.ip_address(host)]
    except ValueError:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM), 10)
        except (OSError, asyncio.TimeoutError):
            raise UpstreamError("upstream redirected to a host that does not resolve") from None
        ips = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not ips or any(_is_internal(ip) for ip in ips):
        raise RedirectRefused(f"upstream redirected to a loopback or private address; refused ({_ALLOW_HINT})")
