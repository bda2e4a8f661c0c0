"""Persistent maps made of plain dicts, which the cyclic garbage collector does not track.

The replicated state used `immutables.Map`, a hash array mapped trie. Its nodes are C
objects the collector always tracks: at 100,000 slots the state was about 110,000 of
them, and while sessions were being placed every entry replaced a few thousand. They
survived the youngest generation, filled the middle one and were walked again by every
collection of it; on the leader that took up to 0.26 s of CPU with the GIL held, the Raft
thread silent meanwhile, and a leader silent for longer than the election timeout is a
leader the followers replace (docs/performance.md, "The state the collector walked").

A `CowMap` spreads its entries over a power-of-two number of buckets, each a plain dict,
kept in a tuple. CPython tracks neither a dict whose keys and values it does not track
(strings, numbers, `SlotState`s, which are `gc=False` structs) nor, once a collection
has seen it, a tuple of such dicts: a map of slots is one tracked object however many
entries it holds. A `CowMutation` copies a bucket the first time it changes it and
changes that copy in place afterwards, so an entry costs O(its changes x bucket size),
and `finish` shares every untouched bucket with the map it started from. The bucket
count doubles when buckets average more than `MAX_BUCKET` entries and halves when a map
shrinks to a quarter of that. Iteration order follows the string hashes (as the trie's
did): readers that need an order sort.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, Sequence, ValuesView
from itertools import chain
from typing import Any, Generic, TypeVar, overload

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")

MAX_BUCKET = 64
"""Average entries per bucket above which a map doubles its buckets (a first change to a
bucket in an entry copies it: at most about twice this many entries)."""
_MISSING: Any = object()


def _bucket_count(size: int) -> int:
    """Buckets for `size` entries: a power of two, about MAX_BUCKET / 2 entries each."""
    count = 1
    while count * MAX_BUCKET < size * 2:
        count *= 2
    return count


def _spread(items: Iterable[tuple[Any, Any]], size: int) -> tuple[dict[Any, Any], ...]:
    count = _bucket_count(size)
    mask = count - 1
    buckets: list[dict[Any, Any]] = [{} for _ in range(count)]
    for key, value in items:
        buckets[hash(key) & mask][key] = value
    return tuple(buckets)


class _Buckets(Mapping[K, V]):
    """Reading, shared by the map and its mutation: a key lives in bucket hash & mask."""

    __slots__ = ()
    _buckets: Sequence[dict[Any, Any]]
    _mask: int
    _len: int

    def __getitem__(self, key: K) -> V:
        value: V = self._buckets[hash(key) & self._mask][key]
        return value

    @overload
    def get(self, key: K, /) -> V | None: ...
    @overload
    def get(self, key: K, default: D, /) -> V | D: ...
    def get(self, key: K, default: Any = None, /) -> Any:
        return self._buckets[hash(key) & self._mask].get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._buckets[hash(key) & self._mask]

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[K]:
        return chain.from_iterable(self._buckets)


class CowMap(_Buckets[K, V], Generic[K, V]):
    """An immutable mapping; `set` and `mutate` make new ones sharing buckets."""

    __slots__ = ("_buckets", "_len", "_mask")

    def __init__(self, items: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        entries = dict(items)
        self._buckets = _spread(entries.items(), len(entries))
        self._mask = len(self._buckets) - 1
        self._len = len(entries)

    @classmethod
    def _of(cls, buckets: tuple[dict[Any, Any], ...], size: int) -> CowMap[K, V]:
        made: CowMap[K, V] = cls.__new__(cls)
        made._buckets, made._mask, made._len = buckets, len(buckets) - 1, size
        return made

    # -- reading (and _Buckets') --------------------------------------------------

    def keys(self) -> KeysView[K]:
        return KeysView(self)

    def values(self) -> ValuesView[V]:
        return _Values(self)

    def items(self) -> ItemsView[K, V]:
        return _Items(self)

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        if not isinstance(other, Mapping) or len(other) != self._len:
            return False
        return all(other.get(key, _MISSING) == value for key, value in self.items())

    def __hash__(self) -> int:  # immutable, like the trie it replaced (O(n): rarely used)
        return hash(frozenset(self.items()))

    def __repr__(self) -> str:
        return f"CowMap({dict(self.items())!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self.items()),))

    # -- new maps -----------------------------------------------------------------

    def mutate(self) -> CowMutation[K, V]:
        return CowMutation(self)

    def set(self, key: K, value: V) -> CowMap[K, V]:
        """This map with one entry set (an entry of many changes uses `mutate`)."""
        mutation = self.mutate()
        mutation[key] = value
        return mutation.finish()


class _Values(ValuesView[V]):
    _mapping: CowMap[Any, V]

    def __iter__(self) -> Iterator[V]:
        return chain.from_iterable(map(dict.values, self._mapping._buckets))


class _Items(ItemsView[K, V]):
    _mapping: CowMap[K, V]

    def __iter__(self) -> Iterator[tuple[K, V]]:
        return chain.from_iterable(map(dict.items, self._mapping._buckets))


class CowMutation(_Buckets[K, V], Generic[K, V]):
    """A working copy of a `CowMap` for one entry; `finish` freezes it into a new map.

    Buckets are copied on their first change and shared until then; after `finish` the
    next change copies again, so a finished map never changes under its readers."""

    __slots__ = ("_base", "_buckets", "_changed", "_len", "_mask", "_owned")

    def __init__(self, base: CowMap[K, V]) -> None:
        self._base = base
        self._buckets: Sequence[dict[Any, Any]] = base._buckets  # a list once one is copied
        self._mask = base._mask
        self._len = base._len
        self._owned: set[int] = set()
        self._changed = False

    @property
    def changed(self) -> bool:
        return self._changed

    def _own(self, index: int) -> dict[Any, Any]:
        if index in self._owned:
            return self._buckets[index]
        buckets = self._buckets
        if not isinstance(buckets, list):
            buckets = self._buckets = list(buckets)
        bucket = buckets[index] = dict(buckets[index])
        self._owned.add(index)
        self._changed = True
        return bucket

    def __setitem__(self, key: K, value: V) -> None:
        bucket = self._own(hash(key) & self._mask)
        if key not in bucket:
            self._len += 1
        bucket[key] = value

    def __delitem__(self, key: K) -> None:
        index = hash(key) & self._mask
        if key not in self._buckets[index]:
            raise KeyError(key)
        del self._own(index)[key]
        self._len -= 1

    def pop(self, key: K, default: Any = _MISSING) -> Any:
        index = hash(key) & self._mask
        if key not in self._buckets[index]:
            if default is _MISSING:
                raise KeyError(key)
            return default
        self._len -= 1
        return self._own(index).pop(key)

    def finish(self) -> CowMap[K, V]:
        """The map as changed; the very map it started from when nothing changed."""
        if not self._changed:
            return self._base
        self._owned = set()  # what it hands out is frozen: a later change copies again
        count = len(self._buckets)
        wanted = _bucket_count(self._len)
        if wanted > count or wanted * 4 <= count:
            items = chain.from_iterable(map(dict.items, self._buckets))
            return CowMap._of(_spread(items, self._len), self._len)
        return CowMap._of(tuple(self._buckets), self._len)


EMPTY: CowMap[Any, Any] = CowMap()
