"""Bring missing contents into the store through the same fills client requests use.

Every content goes through `Fetcher.start`, the same single-flight fill a client request
uses: it joins a fill already running in this process, resumes a spool an interrupted
run left behind (Range from the spool's length), verifies the upstream hash, and ingests
into chunks (so a changed file stores only its new chunks). At most `concurrency`
contents move at once. Failures are collected, never raised, so one bad file does not
stop the others.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Callable

from mirror.caller import Caller
from mirror.errors import MirrorError, Overloaded, StorageError
from mirror.resolve.files import Files
from mirror.resolve.fetcher import Fetcher
from mirror.resolve.fill import Fill, FillTarget
from mirror.sync.plan import FileTask

log = logging.getLogger("mirror.sync")

# Called with (bytes done, bytes total) as bytes arrive.
ProgressFn = Callable[[int, int], None]


@dataclass
class FetchResult:
    fetched: list[FileTask] = field(default_factory=list)
    failed: list[tuple[FileTask, str]] = field(default_factory=list)


async def fetch_all(
    files: Files,
    fetcher: Fetcher,
    tasks: list[FileTask],
    caller: Caller,
    *,
    concurrency: int = 4,
    progress: ProgressFn | None = None,
) -> FetchResult:
    result = FetchResult()
    sem = asyncio.Semaphore(concurrency)
    total = sum(t.entry.size for t in tasks)
    active: dict[str, Fill] = {}
    finished = 0

    async def one(task: FileTask) -> None:
        nonlocal finished
        async with sem:
            try:
                await _fetch_one(files, fetcher, task, caller, active)
                result.fetched.append(task)
            except MirrorError as exc:
                result.failed.append((task, exc.message))
                log.warning("sync: %s %s failed: %s", task.key, task.entry.path, exc.message)
            finally:
                active.pop(task.entry.identity, None)
                finished += task.entry.size

    async def report() -> None:
        while True:
            if progress is not None:
                progress(min(total, finished + sum(f.written for f in active.values())), total)
            await asyncio.sleep(0.2)

    reporter = asyncio.create_task(report())
    try:
        await asyncio.gather(*(one(t) for t in tasks))
    finally:
        reporter.cancel()
        try:
            await reporter
        except asyncio.CancelledError:
            pass
    if progress is not None:
        progress(finished, total)
    return result


async def _fetch_one(files: Files, fetcher: Fetcher, task: FileTask, caller: Caller, active: dict[str, Fill]) -> None:
    ident = task.entry.identity
    if await files.stored_manifest(ident) is not None:
        return  # another fill (a client, another revision) stored it meanwhile
    target = FillTarget(task.key, task.commit, task.entry)
    while True:
        try:
            fill = fetcher.start(target, caller)
            break
        except Overloaded:  # the daemon is busy with clients' cold fetches: wait our turn
            await asyncio.sleep(1.0)
    active[ident] = fill
    await fill.done.wait()
    if fill.error is not None or not fill.verified:
        raise fill.error or StorageError("fetch failed")
    await fill.ingested.wait()
    if await files.stored_manifest(ident) is None:
        raise StorageError("fetched but could not be stored (see the log)")
