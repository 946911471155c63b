"""Whether the node keeps up with its cameras (ROS-free; the node feeds it, the pipeline
reads it).

The node keeps one "latest wins" slot per camera: a frame that arrives before the previous
one was taken overwrites it and is dropped. :class:`KeepingUp` watches those drops over a
sliding window. When more than ``drop_frac`` of the frames of the last ``window_s`` seconds
were dropped (over at least ``min_frames`` frames), the node is *behind* for ``hold_s``
seconds: it then processes its frames with cheaper settings (level 1:
``proposal_box_net_behind``, the shipped box network's INT8 copy) instead of losing them.
When those still drop more than ``drop_frac`` of their frames over a whole window of the
hold (at once where level 1 changes nothing, e.g. with ``crop_source: full_frame``), it steps
one level further (level 2: ``inference_backend_behind``, the student's INT8
copy too, where the node was asked for it) for the rest of the hold. After the hold it tries
the full settings again; when they fall behind again within two windows, the next hold is
twice as long (at most ``max_hold_s``), and a try that keeps up for two windows resets it.

Each level is judged on its own frames only: the frames dropped before a level started (by
a costlier one) do not count against it, and at the cheapest level drops are not counted. A
replay that processes every frame (``replay-eval --offline``) never drops one, so it never
falls behind.

Thread safety: every method takes an internal lock (the executor thread calls
:meth:`KeepingUp.frame`, the worker threads :meth:`KeepingUp.level`).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

__all__ = ["KeepingUp", "KeepingUpConfig", "MAX_FRAMES_IN_WINDOW"]

#: Most frames remembered (a flood of tiny frames keeps only the latest ones).
MAX_FRAMES_IN_WINDOW = 20000


@dataclass(frozen=True)
class KeepingUpConfig:
    """The bounds of :class:`KeepingUp` (fixed in the node; see README: Performance)."""

    #: Seconds of frames the drop fraction is measured over.
    window_s: float = 2.0
    #: Fraction of dropped frames in the window that makes the node behind.
    drop_frac: float = 0.05
    #: Fewest frames in the window for a decision (fewer: keeping up).
    min_frames: int = 20
    #: Seconds the cheaper settings hold before the full ones are tried again.
    hold_s: float = 10.0
    #: Longest hold, reached by doubling after each try that falls behind again at once.
    max_hold_s: float = 120.0

    def __post_init__(self) -> None:
        if not 0.1 <= self.window_s <= 60.0:
            raise ValueError(f"window_s must be in [0.1, 60], got {self.window_s}")
        if not 0.0 < self.drop_frac < 1.0:
            raise ValueError(f"drop_frac must be in (0, 1), got {self.drop_frac}")
        if not 1 <= self.min_frames <= 10000:
            raise ValueError(f"min_frames must be in [1, 10000], got {self.min_frames}")
        if not 0.0 < self.hold_s <= self.max_hold_s <= 3600.0:
            raise ValueError(f"need 0 < hold_s <= max_hold_s <= 3600, got {self.hold_s}, "
                             f"{self.max_hold_s}")


class KeepingUp:
    """Drops of the cameras' latest-wins slots -> how much cheaper to process the next frame.

    The answer is a *level*: 0 the full settings, 1 the first cheaper step (the box network's
    INT8 copy), up to ``levels`` (2: the student's INT8 copy too). Level 0 that drops too many
    frames starts a hold at level 1; a level that still drops too many over a whole window
    within the hold steps one further (at most ``levels``); when the hold ends, the full
    settings are tried again.

    Args:
        config: the window, drop fraction and holds.
        clock: monotonic seconds (injectable for tests).
        levels: the cheapest level (1 or 2).
    """

    def __init__(self, config: KeepingUpConfig | None = None,
                 clock: Callable[[], float] = time.monotonic, levels: int = 1) -> None:
        if levels not in (1, 2):
            raise ValueError(f"levels must be 1 or 2, got {levels}")
        self.config = config or KeepingUpConfig()
        self.levels = int(levels)
        self._clock = clock
        self._lock = threading.Lock()
        # (arrival time, dropped) of the frames since the current level started
        self._frames: deque[tuple[float, bool]] = deque(maxlen=MAX_FRAMES_IN_WINDOW)
        self._level = 0
        self._until = float("-inf")       # behind until this time
        self._tried_at = float("-inf")     # the full settings last started here
        self._since = float("-inf")        # the current level started here
        self._hold = self.config.hold_s
        #: Times the node fell behind (level 0 -> 1).
        self.times_behind = 0
        #: Times it fell behind further (a step past level 1).
        self.times_further = 0

    def frame(self, dropped: bool, now: float | None = None) -> None:
        """Count one arriving frame; ``dropped``: it overwrote a frame not yet taken."""
        now = self._clock() if now is None else now
        with self._lock:
            if self._level >= self.levels and now < self._until:
                return                    # the cheapest level: nothing to decide until the end
            self._frames.append((now, bool(dropped)))
            self._forget(now)

    def level(self, now: float | None = None, first_step: bool = True) -> int:
        """How much cheaper the next frame is to be processed: 0 (the full settings) to
        :attr:`levels`. ``first_step``: level 1 makes the frames cheaper at all (False, e.g.
        without a box network to replace: level 1 is passed over for level 2 where there is
        one)."""
        now = self._clock() if now is None else now
        with self._lock:
            cfg = self.config
            if self._level and now >= self._until:          # the hold has ended
                self._level = 0                             # try the full settings
                self._tried_at = self._since = self._until  # on the frames since it ended
            if self._level >= self.levels:
                return self._level
            self._forget(now)
            total = len(self._frames)
            dropped = sum(1 for _, d in self._frames if d)
            over = total >= cfg.min_frames and dropped > cfg.drop_frac * total
            if self._level:
                # a cheaper level is judged over a whole window of its own frames; one that
                # changes nothing is passed over at once
                if (over and now - self._since >= cfg.window_s) or not first_step:
                    self._step(now, self._level + 1)
                    self.times_further += 1
                return self._level
            at_once = now - self._tried_at < 2.0 * cfg.window_s   # soon after a try began
            if not over:
                if not at_once:
                    self._hold = cfg.hold_s         # two windows kept up: holds start over
                return 0
            if at_once:
                self._hold = min(2.0 * self._hold, cfg.max_hold_s)  # behind again at once
            self._until = now + self._hold
            self.times_behind += 1
            self._step(now, 1)
            if not first_step and self.levels > 1:
                self._step(now, 2)
                self.times_further += 1
            return self._level

    def behind(self, now: float | None = None) -> bool:
        """Whether the next frame is to be processed with cheaper settings (level >= 1)."""
        return self.level(now) > 0

    def status(self, now: float | None = None) -> dict[str, object]:
        """``behind_cameras`` (now), ``behind_level`` (0 when not behind),
        ``times_behind``, ``times_behind_further`` and the current hold (``behind_hold_s``),
        for diagnostics."""
        now = self._clock() if now is None else now
        with self._lock:
            behind = now < self._until
            return {"behind_cameras": behind, "behind_level": self._level if behind else 0,
                    "times_behind": self.times_behind,
                    "times_behind_further": self.times_further, "behind_hold_s": self._hold}

    def _step(self, now: float, level: int) -> None:
        """Start ``level`` now (its frames are counted afresh)."""
        self._level = level
        self._since = now
        self._frames.clear()

    def _forget(self, now: float) -> None:
        """Drop frames older than the window, or from before the current level started."""
        start = max(now - self.config.window_s, self._since)
        while self._frames and self._frames[0][0] < start:
            self._frames.popleft()
