"""Single flight: at most one piece of work in flight per key, shared by every caller.

`share(key, factory)` coalesces identical concurrent look-ups into one task that
outlives any single caller going away (the task is shielded; a cancelled caller leaves
it running for the others). `start(key, make)` / `finish(key, value)` keep one live
object per key for work that callers follow rather than await (cache fills).
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Generic, Hashable, Iterator, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
R = TypeVar("R")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._live: dict[K, V] = {}
        self._tasks: dict[Hashable, asyncio.Future[Any]] = {}

    # --- awaited work -------------------------------------------------------------------

    async def share(self, key: Hashable, factory: Callable[[], Awaitable[R]]) -> R:
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.ensure_future(factory())
            self._tasks[key] = task
            task.add_done_callback(lambda t: (self._tasks.pop(key, None), t.cancelled() or t.exception()))
        return await asyncio.shield(task)  # type: ignore[no-any-return]

    # --- followed work ------------------------------------------------------------------

    def get(self, key: K) -> V | None:
        return self._live.get(key)

    def start(self, key: K, make: Callable[[], V], *, replace: Callable[[V], bool] = lambda v: False) -> V:
        """The live value for `key`, or a new one from `make()` when there is none or
        `replace(old)` says the old one is spent. `make` may raise to refuse."""
        old = self._live.get(key)
        if old is not None and not replace(old):
            return old
        value = make()
        self._live[key] = value
        return value

    def finish(self, key: K, value: V) -> None:
        """Forget `value` if it is still the live one for `key`."""
        if self._live.get(key) is value:
            del self._live[key]

    def values(self) -> Iterator[V]:
        return iter(list(self._live.values()))
