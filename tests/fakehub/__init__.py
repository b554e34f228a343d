"""A fake huggingface.co for tests and benchmarks: a real aiohttp Hub origin plus a CDN origin.

    with FakeHub.running() as hub:               # or hub.start_in_thread() ... hub.stop()
        sha = hub.commit("org/model", {"config.json": b"{}",
                                       "model.safetensors": FileSource.random(64 << 20, seed=1)})
        ...                                      # point the client or the mirror at hub.url

Data (any thread): create_repo(repo_id, repo_type=, private=, gated=, readers=, tags=, pipeline_tag=,
library_name=, card_data=), commit(repo_id, {path: bytes | FileSource | None}, repo_type=, branch=,
message=) -> sha, tag(), create_branch(), set_ref(), create_pr_ref(), add_token(token, user),
grant(repo_id, token), head(repo_id, ref) -> sha.
Switches: latency, bandwidth, ignore_range, xet, small_file_resolve_cache, resolve_header_overrides,
tree_page_size, tree_expand_page_size, commits_page_size, cdn_signature, lfs_threshold; cut_after(),
fail_status(), reset_connections(), corrupt(), clear_faults(); down()/up() (sync) or adown()/aup() (on the loop).
Counters: requests (Seen tuples), count(), bytes_sent, bytes_sent_for(), cdn_saw_authorization,
reset_counters().

Layout: `state` (repos, commits, blobs), `faults` (switches and counters), `handlers` (the routes'
answers), `server` (two aiohttp apps and their lifetime), `control` (the `/_fake/` JSON API for
`python -m tests.fakehub`, see `__main__`).
"""

from .faults import Seen
from .server import FakeHub
from .state import Blob, FileSource, HubError

__all__ = ["Blob", "FakeHub", "FileSource", "HubError", "Seen"]
