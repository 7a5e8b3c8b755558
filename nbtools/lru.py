"""A small least-recently-used cache: the Lab's clean runs, their effects, the Explorer's sweeps."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class LRU:
    """A mapping that keeps its `size` most recently used entries.

    >>> c = LRU(2); c.put("a", 1); c.put("b", 2); c.get("a"); c.put("c", 3)
    1
    >>> list(c.keys())
    ['a', 'c']
    """

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict = OrderedDict()

    def get(self, key: Hashable, default=None):
        """The value for `key` (now the most recent), or `default`."""
        if key not in self._items:
            return default
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key: Hashable, value) -> None:
        """Store `value`; the least recently used entry beyond `size` is dropped."""
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def pop(self, key: Hashable, default=None):
        return self._items.pop(key, default)

    def keys(self):
        return self._items.keys()

    def clear(self) -> None:
        self._items.clear()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)
