"""Message conversions of ``vl_distill_node``'s outputs.

* ``~/labels``: :func:`labels_msg` (std_msgs/String holding the JSON document of
  :func:`~vl_distill_ros.perception.pipeline.labels_document`);
* ``~/detections``: :func:`detections_msg` (vision_msgs/Detection2DArray; vision_msgs is
  optional, :func:`import_vision_msgs` returns ``None`` when it is not installed);
* ``~/image_annotated``: :func:`annotated_msg` (sensor_msgs/Image, rgb8, boxes and labels
  drawn).
"""
from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import String

from ..perception.image_codec import encode_rgb8
from ..perception.pipeline import ObjectResult, draw_annotations

__all__ = ["import_vision_msgs", "labels_msg", "detections_msg", "annotated_msg"]


def import_vision_msgs() -> dict[str, Any] | None:
    """The vision_msgs message classes by name, or ``None`` when vision_msgs is absent."""
    try:
        from vision_msgs.msg import (Detection2D, Detection2DArray, ObjectHypothesis,
                                     ObjectHypothesisWithPose)
    except ImportError:
        return None
    return {"Detection2DArray": Detection2DArray, "Detection2D": Detection2D,
            "ObjectHypothesis": ObjectHypothesis,
            "ObjectHypothesisWithPose": ObjectHypothesisWithPose}


def labels_msg(doc: dict) -> String:
    """The ``~/labels`` message of a labels document."""
    return String(data=json.dumps(doc))


def annotated_msg(src: Image, image: np.ndarray, objects: Sequence[ObjectResult]) -> Image:
    """``image`` (HxWx3 RGB) with ``objects`` drawn, as an rgb8 Image with ``src``'s header."""
    encoding, height, width, step, data = encode_rgb8(draw_annotations(image, objects))
    out = Image()
    out.header = src.header
    out.encoding, out.height, out.width, out.step = encoding, height, width, step
    out.is_bigendian = 0
    out.data = data
    return out


def detections_msg(vision_msgs: dict[str, Any], src: Image, objects: Sequence[ObjectResult]):
    """A Detection2DArray (``src``'s header): one detection per object, its box centre and
    size in pixels and one hypothesis (label, score). Works with vision_msgs 3 (Humble) and
    >= 4 (Jazzy)."""
    arr = vision_msgs["Detection2DArray"]()
    arr.header = src.header
    for i, o in enumerate(objects):
        det = vision_msgs["Detection2D"]()
        det.header = src.header
        x, y, w, h = o.bbox
        center = det.bbox.center
        if hasattr(center, "position"):  # vision_msgs >= 4 (Jazzy): vision_msgs/Pose2D
            center.position.x, center.position.y = x + w / 2.0, y + h / 2.0
        else:  # vision_msgs 3 (Humble): geometry_msgs/Pose2D
            center.x, center.y = x + w / 2.0, y + h / 2.0
        det.bbox.size_x, det.bbox.size_y = float(w), float(h)
        if hasattr(det, "id"):
            det.id = str(i)
        hyp = vision_msgs["ObjectHypothesisWithPose"]()
        if hasattr(hyp, "hypothesis"):
            hyp.hypothesis.class_id, hyp.hypothesis.score = o.label, float(o.score)
        else:  # pragma: no cover - very old vision_msgs
            hyp.id, hyp.score = o.label, float(o.score)
        det.results.append(hyp)
        arr.detections.append(det)
    return arr
