"""The caller of a request: who is asking, parsed once at the edge.

A `Caller` travels from the HTTP middleware (or the CLI, for `pull` and `sync`) down to
every layer that decides something about the caller: access checks of gated and private
repos, the upstream credential, stickiness of canary splits, audit records. Layers never
see raw headers. Pure value object: no I/O, no aiohttp.

Fields filled today: the Hub token (forwarded upstream for gated and private repos, never
logged), the client address and `X-Client-Id`. The mirror-token middleware of access
control adds `principal` (who the mirror token names) without touching any other layer.
`peer` is set when another mirror node asked this one to fetch a file for the site
(peers/service.py): such a fill goes to upstream, never back to the peers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Caller:
    hub_token: str | None = None  # the caller's own Hub token, passed upstream as is
    address: str = ""  # the client's address as the server saw it
    client_id: str = ""  # X-Client-Id, when the client sent one
    principal: str = ""  # the mirror token's name (access control); "" = anonymous
    peer: str = ""  # the peer node's key when a peer asks this node to fill a file
    role: str = "anonymous"  # admin | developer | auditor | anonymous (mirror/auth/)
    grants: tuple[str, ...] = ()  # repo globs a developer token may read
    token_id: str = ""  # the mirror token's public id
    offline: bool = False  # a local-only repo: never ask upstream for it (auth/policy.py)

    @property
    def actor(self) -> str:
        """Who did it, as the audit log names them (never a secret)."""
        if self.peer:
            return f"peer:{self.peer[:16]}"
        return self.principal or "anonymous"

    @property
    def client_key(self) -> str:
        """Who the client is for a sticky canary split and per-version client counts:
        the mirror token if any, else `X-Client-Id`, else the Hub token's fingerprint,
        else the client's address (channels/split.py). Never a secret."""
        if self.token_id:
            return f"token:{self.token_id}"
        if self.client_id:
            return f"id:{self.client_id}"
        if self.hub_token:
            return f"hub:{self.fingerprint}"
        return f"addr:{self.address}"

    @property
    def fingerprint(self) -> str:
        """A stable, non-reversible name of the Hub token (memo and coalescing keys)."""
        return token_fingerprint(self.hub_token)

    def __repr__(self) -> str:  # never print the token
        return f"Caller(address={self.address!r}, client_id={self.client_id!r}, token={self.fingerprint})"


def token_fingerprint(token: str | None) -> str:
    if not token:
        return "anonymous"
    return hashlib.sha256(b"model-mirror token\0" + token.encode()).hexdigest()[:24]


ANONYMOUS = Caller()
