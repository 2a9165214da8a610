"""A cache of objects that are expensive to build (onnxruntime sessions): each key is built once,
and the built objects are kept, least recently used out, within a byte budget.

The registry keeps the model versions it loads on demand in one, the inspection cache its
inspection sessions in another. Both need the same guarantees:

- One build per key. Concurrent callers for the same key share it: they wait for the first
  caller's build and get its result or its exception. A failed build is not cached.
- No lock held while building. Callers for cached keys are answered while a build runs.
- A byte budget, counted by ``size_of``. The least recently used entries go once the entries
  add up to more than ``budget_bytes``, but the latest one always stays. Freed pages go back
  to the system after an eviction (``service.memory``).
- ``invalidate`` (after a reload) drops the entries it does not keep. A build that is running
  at that moment still serves its callers, but it is cached only if ``invalidate`` would keep
  it. Otherwise a superseded model would sit in the cache until evicted.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Generic, TypeVar

from service.memory import release_free_memory

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LoadOnceCache(Generic[K, V]):
    """Objects by key, built at most once each, kept within ``budget_bytes`` (module docstring)."""

    def __init__(self, budget_bytes: int, size_of: Callable[[V], int]) -> None:
        self.budget_bytes = budget_bytes
        self._size_of = size_of
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._building: dict[K, Future[V]] = {}
        self._invalidations = 0
        self._keep: Callable[[K], bool] = lambda key: True  # what the last invalidate kept
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def values(self) -> list[V]:
        with self._lock:
            return [value for value, _ in self._entries.values()]

    @property
    def size_bytes(self) -> int:
        """What ``size_of`` counts for the cached entries."""
        with self._lock:
            return sum(size for _, size in self._entries.values())

    @property
    def building(self) -> int:
        """How many builds are running now."""
        return len(self._building)

    def get_or_build(self, key: K, build: Callable[[], V]) -> V:
        """The cached object for ``key``, or the one ``build`` makes (one build per key)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry[0]
            pending = self._building.get(key)
            leader = pending is None
            if pending is None:
                pending = self._building[key] = Future()
            invalidations = self._invalidations
        if not leader:
            return pending.result()  # the leader's object, or its exception
        try:
            value = build()
        except BaseException as exc:
            with self._lock:
                del self._building[key]
            pending.set_exception(exc)
            raise
        evicted = 0
        with self._lock:
            del self._building[key]
            if invalidations == self._invalidations or self._keep(key):
                self._entries[key] = (value, self._size_of(value))
                evicted = self._evict_over_budget()
        pending.set_result(value)
        if evicted:
            release_free_memory()
        return value

    def invalidate(self, keep: Callable[[K], bool]) -> int:
        """Drop every entry whose key ``keep`` rejects; a build running now is cached only if
        ``keep`` accepts its key. How many entries went."""
        with self._lock:
            self._invalidations += 1
            self._keep = keep
            stale = [key for key in self._entries if not keep(key)]
            for key in stale:
                del self._entries[key]
        return len(stale)

    def _evict_over_budget(self) -> int:
        """Drop least recently used entries until the rest fit the budget (lock held)."""
        evicted = 0
        total = sum(size for _, size in self._entries.values())
        while total > self.budget_bytes and len(self._entries) > 1:
            _, (_, size) = self._entries.popitem(last=False)
            total -= size
            evicted += 1
        return evicted
