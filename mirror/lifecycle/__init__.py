"""The lifecycle: access-based archiving, eviction under a disk budget, mark-and-sweep GC.

    policy.py   the `[lifecycle]` policy, the reference graph, which revisions are cold,
                and `run_once` (the daemon's periodic job)
    archive.py  hot -> archive packs (copy, verify, flip, delete) and thaw back
    evict.py    drop least recently used unpinned revisions above the high watermark
    gc.py       mark from every kept manifest, sweep the rest; repack sparse packs
    lock.py     one lifecycle operation at a time across processes

Safety rules (threat-model T27, C7, C8): archive keeps a verified copy at every moment
(copy -> fsync -> re-read and blake3 -> rename -> catalog flip -> delete hot), and readers
fall back from a missing hot file to the packs, so archiving never breaks a stream. GC
never deletes a chunk that a kept manifest references, that is younger than `gc_grace`
(by its catalog row's `created_at` on the injected clock, or by file mtime when it has no
row yet: an in-flight ingest), or that a reader in this process holds a lease on.
Across processes, eviction never drops a revision accessed within `gc_grace`, so a
stream that started less than `gc_grace` ago in another process keeps its chunks.
"""
