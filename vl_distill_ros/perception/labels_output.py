"""What the pipeline says about a frame: one :class:`ObjectResult` per classified crop, the
``~/labels`` JSON document of a frame (:func:`labels_document`, the node's and the offline
replay's output) and the annotated image (:func:`draw_annotations`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

__all__ = ["ObjectResult", "labels_document", "draw_annotations"]


@dataclass
class ObjectResult:
    """One classified crop.

    Attributes:
        bbox: ``(x, y, w, h)`` integer pixel box in the input image.
        label: best label name, or ``"unknown"`` below the open-set threshold.
        score: softmax score of the best label (even when ``label`` is ``"unknown"``).
        known: False when the crop was labelled ``"unknown"``.
        top_k: the ``top_k`` best ``(label, score)`` pairs, best first.
        position: with depth, the centre of the object in the camera's optical frame
            (metres; :mod:`~.object_placement`), else None.
        size: with depth, its ``(across, along, height)`` extent (metres), else None.
        orientation: with depth, the ``(x, y, z, w)`` quaternion of its box's axes in the
            camera's optical frame (:class:`~.object_placement.ObjectPlacement`), else None.
        track_id: with object tracking, the id of the object's track in its camera (the
            same object keeps it from frame to frame; :mod:`~.object_tracks`), else None.
    """

    bbox: tuple[int, int, int, int]
    label: str
    score: float
    known: bool
    top_k: list[tuple[str, float]] = field(default_factory=list)
    position: tuple[float, float, float] | None = None
    size: tuple[float, float, float] | None = None
    orientation: tuple[float, float, float, float] | None = None
    track_id: int | None = None


def labels_document(stamp_sec: int, stamp_nanosec: int, frame_id: str, camera: str,
                    version: int, objects: Sequence[ObjectResult],
                    score_digits: int = 6) -> dict:
    """The JSON document published on ``~/labels`` for one frame.

    Schema::

        {"header": {"stamp": {"sec": int, "nanosec": int}, "frame_id": str},
         "camera": str,                      # the image topic
         "vocabulary_version": int,
         "objects": [{"bbox": [x, y, w, h], "label": str, "score": float, "known": bool,
                      "top_k": [[label, score], ...],
                      "position": [x, y, z], "size": [across, along, height],
                      "orientation": [x, y, z, w], "track_id": int}]}

    Scores are rounded to ``score_digits`` decimals. ``position`` (metres, the camera's
    optical frame, i.e. the header's ``frame_id``), ``size`` (metres) and ``orientation``
    (the box axes' quaternion) are present only for objects placed with depth
    (:attr:`ObjectResult.position`); positions and sizes are rounded to millimetres.
    ``track_id`` is present only with object tracking (``track_objects``).
    """
    return {
        "header": {"stamp": {"sec": int(stamp_sec), "nanosec": int(stamp_nanosec)},
                   "frame_id": str(frame_id)},
        "camera": str(camera),
        "vocabulary_version": int(version),
        "objects": [_object_document(o, score_digits) for o in objects],
    }


def _object_document(o: ObjectResult, score_digits: int) -> dict:
    """One object of :func:`labels_document`."""
    doc = {"bbox": [int(v) for v in o.bbox], "label": o.label,
           "score": round(float(o.score), score_digits), "known": bool(o.known),
           "top_k": [[str(name), round(float(s), score_digits)] for name, s in o.top_k]}
    if o.position is not None and o.size is not None:
        doc["position"] = [round(float(v), 3) for v in o.position]
        doc["size"] = [round(float(v), 3) for v in o.size]
        if o.orientation is not None:
            doc["orientation"] = [round(float(v), 4) for v in o.orientation]
    if o.track_id is not None:
        doc["track_id"] = int(o.track_id)
    return doc


def draw_annotations(image: np.ndarray, objects: Sequence[ObjectResult]) -> np.ndarray:
    """A copy of the RGB ``image`` with each object's box and ``label score`` drawn (and,
    for an object placed with depth, its distance from the camera, ``@ 0.74 m``).

    Known objects are drawn in green, unknown ones in red.
    """
    out = np.ascontiguousarray(np.array(image, dtype=np.uint8, copy=True))
    height, width = out.shape[:2]
    thickness = max(1, round(min(height, width) / 240))
    font_scale = max(0.35, min(height, width) / 960)
    for o in objects:
        x, y, w, h = (int(v) for v in o.bbox)
        colour = (40, 200, 40) if o.known else (220, 40, 40)
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), colour, thickness)
        text = f"{o.label} {o.score:.2f}"
        if o.position is not None:
            text += f" @ {float(np.linalg.norm(o.position)):.2f} m"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        ty = y - 3 if y - th - base - 3 >= 0 else min(height - 1, y + th + 3)
        cv2.rectangle(out, (x, ty - th - 2), (min(width - 1, x + tw + 2), ty + base - 1),
                      colour, -1)
        cv2.putText(out, text, (x + 1, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return out
