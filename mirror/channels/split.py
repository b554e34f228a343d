"""The sticky canary split: which side of a canary a client gets.

A client's bucket is blake3(salt, client key) mod 10,000; it gets the canary when its bucket
is below weight x 100. The bucket depends only on the canary's salt (stored with the alias,
random per canary) and the client's key (`Caller.client_key`: mirror token, else
X-Client-Id, else Hub-token fingerprint, else address), so:

- a client keeps its side across requests, processes and restarts, on every node that
  shares the catalog row;
- raising the weight only moves clients from the stable side to the canary (a bucket
  below 10% is below 20%), never back; lowering it does the reverse only;
- a new canary gets a new salt, so the same clients are not always the first to try;
  the salt is derived from the canary (repo, alias, commit, start time) rather than
  drawn at random, so who is on which side can be recomputed from the history alone.
"""

from __future__ import annotations

import blake3

BUCKETS = 10_000


def canary_salt(key: object, alias: str, commit: str, started_at: float) -> str:
    return blake3.blake3(f"{key}\0{alias}\0{commit}\0{started_at!r}".encode()).hexdigest()[:16]


def bucket(salt: str, client_key: str) -> int:
    digest = blake3.blake3(salt.encode() + b"\0" + client_key.encode()).digest(8)
    return int.from_bytes(digest, "big") % BUCKETS


def on_canary(salt: str, client_key: str, weight: float) -> bool:
    return bucket(salt, client_key) < round(weight * BUCKETS / 100)
