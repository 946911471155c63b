"""Pair messages of two streams by header stamp (ROS-free; ``message_filters`` is not on PyPI).

A :class:`StampBuffer` holds the latest messages of one secondary stream (a depth camera,
its camera info) in a bounded, stamp-ordered buffer. :meth:`StampBuffer.match` finds the
partner of a primary (colour) stamp: the message with exactly that stamp, else the nearest
one within ``tolerance_ns``, else none. Colour frames themselves are not buffered here: the
caller keeps its "latest wins" slot and asks for a partner when it processes a frame.

The bound is by arrival: a full buffer lets go of the message received first, not of the
smallest stamp. The two are the same while stamps grow; they differ when a stream's time
goes back (``ros2 bag play --loop`` starting over, a simulator restarted, a bag recorded from
several sources), where dropping the smallest stamp would throw away every new message as it
came and leave the stream without partners until its stamps passed the old ones.

Thread safety: every method takes an internal lock, so a subscription callback may
:meth:`~StampBuffer.add` while a worker thread calls :meth:`~StampBuffer.match`.
"""
from __future__ import annotations

import bisect
import threading
from collections import deque
from typing import Any, Callable, Generic, TypeVar

__all__ = ["StampBuffer", "MAX_CAPACITY"]

T = TypeVar("T")
#: Upper bound of :class:`StampBuffer` capacity (messages held per stream).
MAX_CAPACITY = 1000


class StampBuffer(Generic[T]):
    """Bounded buffer of ``(stamp ns, item)`` pairs with nearest-stamp lookup.

    Args:
        tolerance_ns: largest ``|stamp - query|`` (ns) :meth:`match` accepts (0: exact only).
        capacity: most items kept (1 .. :data:`MAX_CAPACITY`); adding more drops the item
            received first, which is counted in :attr:`evicted`.
        max_bytes: with ``size_of``, most bytes the items may hold together (0: no bound);
            adding more drops the items received first, all but the newest (30 depth images
            of any size were a camera's bound: 3 GB of 100 MB images that could never pair).
        size_of: an item's size in bytes.

    Raises:
        ValueError: a negative tolerance or a capacity out of range.
    """

    def __init__(self, tolerance_ns: int, capacity: int = 10, max_bytes: int = 0,
                 size_of: Callable[[T], int] | None = None) -> None:
        if int(tolerance_ns) < 0:
            raise ValueError(f"tolerance_ns must be >= 0, got {tolerance_ns}")
        if not 1 <= int(capacity) <= MAX_CAPACITY:
            raise ValueError(f"capacity must be in [1, {MAX_CAPACITY}], got {capacity}")
        self.tolerance_ns = int(tolerance_ns)
        self.capacity = int(capacity)
        self.max_bytes = int(max_bytes) if size_of is not None else 0
        self._size_of = size_of
        self._sizes: dict[int, int] = {}       # stamp -> bytes (with max_bytes)
        self._bytes = 0
        self._stamps: list[int] = []
        self._items: list[Any] = []
        #: The held stamps in the order they were received (each once).
        self._arrivals: deque[int] = deque()
        self._lock = threading.Lock()
        #: Items dropped because the buffer was full.
        self.evicted = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._stamps)

    def add(self, stamp_ns: int, item: T) -> None:
        """Insert ``item`` at ``stamp_ns`` (an equal stamp replaces the older item, and counts
        as received now); when the buffer is over capacity the item received first goes."""
        stamp = int(stamp_ns)
        size = int(self._size_of(item)) if self.max_bytes else 0
        with self._lock:
            self._bytes += size - self._sizes.pop(stamp, 0)
            if self.max_bytes:
                self._sizes[stamp] = size
            i = bisect.bisect_left(self._stamps, stamp)
            if i < len(self._stamps) and self._stamps[i] == stamp:
                self._items[i] = item
                self._arrivals.remove(stamp)
                self._arrivals.append(stamp)
            else:
                self._stamps.insert(i, stamp)
                self._items.insert(i, item)
                self._arrivals.append(stamp)
            while len(self._stamps) > self.capacity or (
                    self.max_bytes and self._bytes > self.max_bytes and len(self._stamps) > 1):
                gone = self._arrivals.popleft()
                j = bisect.bisect_left(self._stamps, gone)
                del self._stamps[j]
                del self._items[j]
                self._bytes -= self._sizes.pop(gone, 0)
                self.evicted += 1

    def match(self, stamp_ns: int) -> tuple[int, T] | None:
        """``(stamp, item)`` with exactly ``stamp_ns``, else the nearest within the tolerance
        (the earlier one on a tie), else ``None``. The item stays in the buffer."""
        stamp = int(stamp_ns)
        with self._lock:
            i = bisect.bisect_left(self._stamps, stamp)
            best = None
            for j in (i - 1, i):  # the neighbours on both sides; i may be the exact match
                if 0 <= j < len(self._stamps):
                    gap = abs(self._stamps[j] - stamp)
                    if gap <= self.tolerance_ns and (best is None or gap < best[0]):
                        best = (gap, j)
            if best is None:
                return None
            return self._stamps[best[1]], self._items[best[1]]

    def latest_stamp(self) -> int | None:
        """The stamp of the item received last (the newest stamp while stamps grow), or
        ``None`` when empty."""
        with self._lock:
            return self._arrivals[-1] if self._arrivals else None

    def latest(self) -> tuple[int, T] | None:
        """``(stamp, item)`` of the item received last, or ``None`` when empty."""
        with self._lock:
            if not self._arrivals:
                return None
            stamp = self._arrivals[-1]
            return stamp, self._items[bisect.bisect_left(self._stamps, stamp)]

    def clear(self) -> None:
        """Drop every item."""
        with self._lock:
            self._stamps.clear()
            self._items.clear()
            self._arrivals.clear()
            self._sizes.clear()
            self._bytes = 0
