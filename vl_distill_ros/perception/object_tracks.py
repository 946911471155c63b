"""Objects followed from frame to frame of one camera, and their views pooled (numpy, no ROS).

A robot's camera sees the same objects in frame after frame, each time a little turned. One
view of an object can mislead the student (a glare, a side it never saw, a bad crop); the
views of a few frames together mislead it less. :class:`ObjectTracks` links each box of a
frame to a box of the camera's previous frames, the *track* of one object, and gives the
student's embedding of the box pooled with that track's earlier embeddings; the names are
then scored on the pooled embedding, exactly as on one view (threshold, seen bias and
calibration unchanged). Pooling is in the image-embedding space, so a vocabulary change
does not reset it.

How a box joins a track (per camera, frames in stamp order):

* **overlap and look**: its box overlaps the track's last box by at least ``min_iou``
  (intersection over union of the two boxes doubled in size about their centres,
  :data:`GROW`: a small object moves by more than its size between the frames of a turning
  camera; on rendered views 7.5 degrees apart 97% of an object's consecutive boxes overlap
  so by 0.3, against 85% undoubled, and 0.7% of two objects' boxes), and its embedding's
  cosine to the track's pooled one is at least :data:`MIN_SIMILARITY` (another object that
  moved into the same place is not taken for it; consecutive views of one object: 99% above
  0.75, of two objects: 99% below 0.63); the pairs are taken best first (overlap plus
  cosine), each box and track once;
* **in time**: the track was last seen at most ``max_gap_s`` before this frame;
* **the same scene**: a frame whose colours are unlike the camera's previous frame's (the
  Bhattacharyya distance of their 8x8x8 RGB histograms, of the frames shrunk to 80x60, above
  :data:`SCENE_CUT`: another scene, a cut in a recording) ends every track of that camera. A
  moving camera keeps its frames' histograms (rendered views of one table 4-8 degrees apart:
  at most 0.12; frames of different tables: at least 0.68), where a pixel-by-pixel
  difference does not. Bags of unrelated frames (``vl-distill make-bag`` without
  ``--views-per-scene``) are scored as before.

Pooling: a track keeps the running sum ``memory * sum + e`` of its unit embeddings ``e``
(older views weigh ``memory``, ``memory**2``, ... against the newest view's 1); the pooled
embedding is that sum normalised. ``memory`` 0 keeps the ids and pools nothing.

A frame older than the camera's last (out of order) by up to ``max_gap_s`` is scored alone
and changes nothing. One older by more means that the camera's time went back (``ros2 bag
play --loop`` starting over, a simulator restarted, a bag put together from several
recordings): as at a scene cut, the camera's tracks end and the frame starts new ones (their
ids go on counting), rather than every frame being scored alone until the stamps pass the old
ones. So does a second frame in a row older than the camera's last, newer than the first (a
loop shorter than ``max_gap_s``, a clock stepped back by less).
Bounded: at most :data:`MAX_TRACKS` tracks per camera (the longest unseen dropped first) and
:data:`MAX_CAMERAS` cameras (the one whose last frame came longest ago forgotten, whatever
the stamps: cameras need not share a clock).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from .boxes import box_iou_matrix

__all__ = ["TrackSettings", "ObjectTracks", "MIN_SIMILARITY", "SCENE_CUT", "MAX_TRACKS",
           "MAX_CAMERAS", "GROW", "colour_histogram", "histogram_distance"]

#: Boxes are compared doubled in size about their centres.
GROW = 2.0
#: Lowest cosine between a box's embedding and a track's pooled embedding for the box to
#: join it.
MIN_SIMILARITY = 0.7
#: Bhattacharyya distance (0-1) of two consecutive frames' colour histograms above which the
#: camera's tracks end (another scene).
SCENE_CUT = 0.4
#: Tracks kept per camera.
MAX_TRACKS = 64
#: Cameras whose tracks are kept.
MAX_CAMERAS = 32
_SMALL = (80, 60)
_BINS = 8


@dataclass(frozen=True)
class TrackSettings:
    """Settings of :class:`ObjectTracks` (the node's ``track_*`` parameters).

    Attributes:
        enabled: follow objects and pool their views (``track_objects``).
        memory: weight of a track's earlier views, 0..0.95 (``track_memory``).
        min_iou: least overlap of a box with the track's last box, 0.05..1 (``track_min_iou``).
        max_gap_s: longest time (s) a track waits unseen, 0..10 (``track_max_gap_s``).
    """

    enabled: bool = True
    memory: float = 0.5
    min_iou: float = 0.3
    max_gap_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.memory) <= 0.95:
            raise ValueError(f"track_memory must be in [0, 0.95], got {self.memory}")
        if not 0.05 <= float(self.min_iou) <= 1.0:
            raise ValueError(f"track_min_iou must be in [0.05, 1], got {self.min_iou}")
        if not 0.0 <= float(self.max_gap_s) <= 10.0:
            raise ValueError(f"track_max_gap_s must be in [0, 10], got {self.max_gap_s}")


@dataclass
class _Track:
    ident: int
    box: tuple[int, int, int, int]
    pooled: np.ndarray          # running sum of unit embeddings (memory-weighted)
    last_seen: float
    #: The camera's frame (:attr:`_Camera.frames`) it was last seen in: stamps may repeat
    #: (every stamp 0, a paused clock), frames do not.
    last_frame: int = 0


@dataclass
class _Camera:
    stamp: float
    hist: np.ndarray
    tracks: list[_Track] = field(default_factory=list)
    next_id: int = 1
    #: Frames linked so far (the last one's number).
    frames: int = 0
    #: The stamp of the last frame scored alone as out of order (None: the last frame was
    #: in order).
    late: float | None = None


def _grown(boxes: Sequence[Sequence[float]]) -> list[tuple[float, float, float, float]]:
    """``(x, y, w, h)`` boxes scaled by :data:`GROW` about their centres."""
    return [(x + 0.5 * w * (1.0 - GROW), y + 0.5 * h * (1.0 - GROW), GROW * w, GROW * h)
            for x, y, w, h in boxes]


def colour_histogram(image: np.ndarray) -> np.ndarray:
    """The normalised 8x8x8 RGB histogram (512 float32 summing to 1) of a uint8 ``(H, W, 3)``
    image shrunk to 80x60 (about 0.3 ms at 640x480)."""
    small = cv2.resize(np.ascontiguousarray(image), _SMALL, interpolation=cv2.INTER_AREA)
    hist = cv2.calcHist([small], [0, 1, 2], None, [_BINS] * 3, [0, 256] * 3).ravel()
    return hist / max(float(hist.sum()), 1.0)


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Bhattacharyya distance (0: the same, 1: disjoint) of two normalised histograms."""
    return float(np.sqrt(max(0.0, 1.0 - float(np.sqrt(a * b).sum()))))


class ObjectTracks:
    """Each camera's object tracks (see the module docstring). Thread-safe."""

    def __init__(self) -> None:
        self._cameras: dict[str, _Camera] = {}
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget every camera's tracks."""
        with self._lock:
            self._cameras.clear()

    def counts(self, camera: str) -> tuple[int, int]:
        """``(active, started)``: ``camera``'s tracks seen in its last frame, and how many
        it has started (0, 0 for a camera not seen)."""
        with self._lock:
            cam = self._cameras.get(camera)
            if cam is None:
                return 0, 0
            return sum(t.last_frame == cam.frames for t in cam.tracks), cam.next_id - 1

    def update(self, camera: str, stamp: float, image: np.ndarray,
               boxes: Sequence[Sequence[int]], embeddings: np.ndarray,
               settings: TrackSettings) -> tuple[np.ndarray, list[int | None]]:
        """Link one frame's ``boxes`` (with the student's unit ``embeddings``, ``(N, D)``)
        to ``camera``'s tracks at ``stamp`` (seconds).

        Returns:
            ``(pooled, ids)``: the ``(N, D)`` unit embeddings to score (each box's own where
            it starts a track) and each box's track id (None for a frame out of order by
            up to ``settings.max_gap_s``).
        """
        emb = np.asarray(embeddings, np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(boxes):
            raise ValueError(f"{len(boxes)} boxes but embeddings of shape {emb.shape}")
        hist = colour_histogram(np.asarray(image))
        with self._lock:
            cam = self._cameras.get(camera)
            back = cam is not None and stamp < cam.stamp
            # a second frame in a row older than the last linked one, and newer than the
            # first: not late frames but the camera's time gone back by up to max_gap_s (a
            # loop shorter than it, a clock stepped back); scored alone, every frame but the
            # loop's last was, for as long as it ran
            again = back and cam.late is not None and stamp > cam.late
            if cam is not None and back and not again and \
                    cam.stamp - stamp <= settings.max_gap_s:
                cam.late = stamp
                return emb, [None] * len(boxes)       # out of order: scored alone
            if cam is None or back or histogram_distance(cam.hist, hist) > SCENE_CUT:
                next_id = cam.next_id if cam is not None else 1
                cam = _Camera(stamp, hist, next_id=next_id)
            self._remember(camera, cam)
            cam.tracks = [t for t in cam.tracks if stamp - t.last_seen <= settings.max_gap_s]
            pooled, ids = self._link(cam, stamp, boxes, emb, settings)
            cam.stamp, cam.hist, cam.late = stamp, hist, None
            return pooled, ids

    def _remember(self, camera: str, cam: _Camera) -> None:
        """Keep ``cam`` as ``camera``'s, the camera of the latest frame (the dict's order is
        the order of the cameras' last frames); forget the ones past :data:`MAX_CAMERAS`."""
        self._cameras.pop(camera, None)
        self._cameras[camera] = cam
        while len(self._cameras) > MAX_CAMERAS:
            del self._cameras[next(iter(self._cameras))]

    @staticmethod
    def _link(cam: _Camera, stamp: float, boxes: Sequence[Sequence[int]], emb: np.ndarray,
              settings: TrackSettings) -> tuple[np.ndarray, list[int | None]]:
        tracks = cam.tracks
        cam.frames += 1
        match: dict[int, int] = {}
        if tracks and len(boxes):
            iou = box_iou_matrix(_grown(boxes), _grown([t.box for t in tracks]))
            past = np.stack([t.pooled / max(float(np.linalg.norm(t.pooled)), 1e-12)
                             for t in tracks])
            cos = emb @ past.T
            ok = (iou >= settings.min_iou) & (cos >= MIN_SIMILARITY)
            order = np.argsort(-(iou + cos), axis=None, kind="stable")
            used_t: set[int] = set()
            for flat in order:
                i, j = divmod(int(flat), len(tracks))
                if ok[i, j] and i not in match and j not in used_t:
                    match[i] = j
                    used_t.add(j)
        pooled = emb.copy()
        ids: list[int | None] = []
        for i, box in enumerate(boxes):
            box_t = tuple(int(v) for v in box)
            if i in match:
                t = tracks[match[i]]
                t.pooled = float(settings.memory) * t.pooled + emb[i]
                t.box, t.last_seen = box_t, stamp        # type: ignore[assignment]
                t.last_frame = cam.frames
                pooled[i] = t.pooled / max(float(np.linalg.norm(t.pooled)), 1e-12)
            else:
                t = _Track(cam.next_id, box_t,  # type: ignore[arg-type]
                           emb[i].astype(np.float32).copy(), stamp, cam.frames)
                cam.next_id += 1
                tracks.append(t)
            ids.append(t.ident)
        if len(tracks) > MAX_TRACKS:
            # the longest unseen go; of one stamp (stamps that repeat), the longest unseen
            # by frames: sorting by the stamp alone kept the oldest tracks and cut the
            # frame's new ones, so no new object kept its track once 64 existed
            tracks.sort(key=lambda t: (t.last_seen, t.last_frame), reverse=True)
            del tracks[MAX_TRACKS:]
        return pooled, ids
