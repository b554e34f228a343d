"""LAN discovery: announce this node and find other mirror nodes by mDNS/DNS-SD.

With `[peers] discovery = true` the daemon registers a DNS-SD service of type
`SERVICE_TYPE` whose TXT record says `v=1`, `key=<public key hex>` and `url=<the URL
peers use>`, and browses the same type. A service found (not our own key) is added to
the peer table as `discovered`; its goodbye (or expiry) removes it.

Discovery gives an address, never trust: anyone on the LAN can announce anything, so a
discovered peer is used only once its signed `hello` proves a key trusted here
(membership.py), exactly like a static one. What a hostile announcer can still do is
bounded: a URL must be a plain base URL (as `[peers] nodes` entries are), and at most
`MAX_DISCOVERED` discovered peers are kept, so a flood of announcements cannot grow the
table or the health checks without limit.

`discovery_interfaces` names the interfaces (by address) mDNS uses; empty means all of
them. Everything runs on the daemon's event loop (zeroconf's asyncio API); the service's
registration (probing, about two seconds) is a task of the node's scheduler, not a wait
before serving.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from typing import Any

from yarl import URL

from mirror.config import PeersConfig
from mirror.peers.membership import Peers

log = logging.getLogger("mirror.peers")

SERVICE_TYPE = "_model-mirror._tcp.local."
TXT_VERSION = "1"
MAX_DISCOVERED = 64
RESOLVE_MS = 3000
CLOSE_TIMEOUT = 5.0
_KEY_RE = re.compile(r"[0-9a-f]{64}", re.ASCII)
_URL_RE = re.compile(r"https?://[^\s/?#]+/?", re.ASCII)


def service_name(key: str) -> str:
    return f"mirror-{key[:16]}.{SERVICE_TYPE}"


def parse_txt(properties: dict[bytes, bytes | None]) -> tuple[str, str] | None:
    """(key, url) from a service's TXT record, or None when it is not a v1 mirror's."""
    txt = {k.decode("ascii", "replace"): (v or b"").decode("ascii", "replace") for k, v in properties.items()}
    key, url = txt.get("key", ""), txt.get("url", "")
    if txt.get("v") != TXT_VERSION or not _KEY_RE.fullmatch(key) or not _URL_RE.fullmatch(url):
        return None
    return key, url.rstrip("/")


class Discovery:
    def __init__(self, config: PeersConfig, peers: Peers, own_key: str) -> None:
        self.config = config
        self.peers = peers
        self.own_key = own_key
        self._zc: Any = None  # AsyncZeroconf
        self._browser: Any = None
        self._info: Any = None  # our registered AsyncServiceInfo
        self._found: dict[str, str] = {}  # service name -> peer url
        self._tasks: set[asyncio.Task[None]] = set()
        self._full_logged = False

    # --- lifetime -------------------------------------------------------------------------

    async def start(self, url: str) -> None:
        """Announce this node at `url` and browse for others (a scheduler task)."""
        from zeroconf import InterfaceChoice, IPVersion
        from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

        interfaces = list(self.config.discovery_interfaces) or InterfaceChoice.All
        v6 = any(ipaddress.ip_address(a).version == 6 for a in self.config.discovery_interfaces)
        try:
            self._zc = AsyncZeroconf(interfaces=interfaces, ip_version=IPVersion.All if v6 else IPVersion.V4Only)
        except (OSError, ValueError, RuntimeError) as exc:
            log.warning("LAN discovery is off: cannot open mDNS on %s: %s",
                        ", ".join(self.config.discovery_interfaces) or "all interfaces", exc)
            return
        self._browser = AsyncServiceBrowser(self._zc.zeroconf, [SERVICE_TYPE], handlers=[self._on_change])
        u = URL(url)
        addresses = []
        try:
            ip = ipaddress.ip_address(u.host or "")
            addresses = [ip.packed]
            lan = [a for a in self.config.discovery_interfaces if not ipaddress.ip_address(a).is_loopback]
            if ip.is_loopback and (lan or not self.config.discovery_interfaces):
                log.warning("LAN discovery announces %s, which other machines cannot reach; set [peers] "
                            "advertise_url (or listen on a LAN address)", url)
        except ValueError:
            pass  # a host name: peers read the URL from the TXT record anyway
        self._info = AsyncServiceInfo(
            SERVICE_TYPE, service_name(self.own_key), port=u.port or 80, addresses=addresses,
            properties={"v": TXT_VERSION, "key": self.own_key, "url": url}, server=f"mirror-{self.own_key[:16]}.local.",
        )
        try:
            await (await self._zc.async_register_service(self._info, allow_name_change=True))
        except Exception as exc:  # zeroconf's NonUniqueNameException, BadTypeInNameException, OSError...
            self._info = None
            log.warning("LAN discovery: cannot announce this node (%s); still browsing", exc)
            return
        log.info("LAN discovery: announced %s as %s", url, service_name(self.own_key))

    async def close(self) -> None:
        """Say goodbye (peers drop this node at once) and stop browsing."""
        for task in list(self._tasks):
            task.cancel()
        zc, self._zc = self._zc, None
        if zc is None:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                if self._browser is not None:
                    await self._browser.async_cancel()
                if self._info is not None:
                    await (await zc.async_unregister_service(self._info))
                await zc.async_close()
        except Exception as exc:  # a timeout, a socket error, a registration cut short by shutdown
            log.warning("LAN discovery: unclean close: %s", exc or type(exc).__name__)
        self._browser = self._info = None

    # --- browsing -------------------------------------------------------------------------

    def _on_change(self, *, zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        """zeroconf's browser callback (on the event loop): resolve added and updated
        services in a task; drop removed ones now."""
        if getattr(state_change, "name", "") == "Removed":
            url = self._found.pop(name, None)
            if url is not None:
                self.peers.remove(url)
            return
        task = asyncio.ensure_future(self._resolve(name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, name: str) -> None:
        from zeroconf.asyncio import AsyncServiceInfo

        if self._zc is None:
            return
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        try:
            if not await info.async_request(self._zc.zeroconf, RESOLVE_MS):
                log.debug("LAN discovery: %s did not answer", name)
                return
        except Exception as exc:  # a malformed record, a closing zeroconf
            log.debug("LAN discovery: cannot resolve %s: %s", name, exc)
            return
        found = parse_txt(info.properties)
        if found is None:
            log.debug("LAN discovery: ignoring %s (not a model-mirror v%s announcement)", name, TXT_VERSION)
            return
        key, url = found
        if key == self.own_key or url == self.peers.self_url:
            return
        old = self._found.get(name)
        if old == url:
            return
        if old is not None:
            self.peers.remove(old)
        elif sum(1 for p in self.peers.all() if p.source == "discovered") >= MAX_DISCOVERED:
            if not self._full_logged:
                log.warning("LAN discovery: %d discovered peers already; ignoring %s", MAX_DISCOVERED, url)
                self._full_logged = True
            return
        self._found[name] = url
        log.info("LAN discovery: found %s (key %s)", url, key[:16])
        self.peers.add(url, "discovered")
