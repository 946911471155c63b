"""Message conversions of ``vl_distill_node``'s outputs.

* ``~/labels``: :func:`labels_msg` (std_msgs/String holding the JSON document of
  :func:`~vl_distill_ros.perception.pipeline.labels_document`);
* ``~/detections``: :func:`detections_msg` (vision_msgs/Detection2DArray of the entries
  :func:`detection_entries` chooses) and ``~/label_info``: :func:`label_info_msg`
  (vision_msgs/LabelInfo); vision_msgs is optional, :func:`import_vision_msgs` returns
  ``None`` when it is not installed;
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

__all__ = ["import_vision_msgs", "labels_msg", "detection_entries", "detections_msg",
           "detections_3d_msg", "label_info_msg", "annotated_msg"]

#: One ``~/detections`` entry: box (centre x, centre y, width, height) in pixels and the
#: hypotheses ``[(class_id, score), ...]``, best first.
DetectionEntry = tuple[tuple[float, float, float, float], list[tuple[str, float]]]


def import_vision_msgs() -> dict[str, Any] | None:
    """The vision_msgs message classes by name, or ``None`` when vision_msgs is absent.
    ``LabelInfo`` and ``VisionClass`` are included when this vision_msgs has them (>= 4)."""
    try:
        from vision_msgs.msg import (Detection2D, Detection2DArray, ObjectHypothesis,
                                     ObjectHypothesisWithPose)
    except ImportError:
        return None
    classes = {"Detection2DArray": Detection2DArray, "Detection2D": Detection2D,
               "ObjectHypothesis": ObjectHypothesis,
               "ObjectHypothesisWithPose": ObjectHypothesisWithPose}
    try:
        from vision_msgs.msg import Detection3D, Detection3DArray
        classes.update(Detection3D=Detection3D, Detection3DArray=Detection3DArray)
    except ImportError:  # pragma: no cover - a vision_msgs without 3-D detections
        pass
    try:
        from vision_msgs.msg import LabelInfo, VisionClass
    except ImportError:  # pragma: no cover - vision_msgs 3 (before LabelInfo)
        return classes
    return {**classes, "LabelInfo": LabelInfo, "VisionClass": VisionClass}


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


def detection_entries(objects: Sequence[ObjectResult]) -> list[DetectionEntry]:
    """What ``~/detections`` reports about ``objects`` (the convention, independent of the
    message classes):

    * only objects the node names (``known``); an object labelled ``unknown`` is left out,
      so no consumer can take an open-set rejection for a confident detection (``~/labels``
      still lists it with ``known: false``);
    * the box as centre and size in pixels;
    * the hypotheses: the object's ``top_k`` (label name, score) pairs, best first, so the
      first is the published label; ``class_id`` is the label name (see
      :func:`label_info_msg`).
    """
    entries = []
    for o in objects:
        if not o.known:
            continue
        x, y, w, h = o.bbox
        entries.append(((x + w / 2.0, y + h / 2.0, float(w), float(h)), _hypotheses(o)))
    return entries


def _hypotheses(o: ObjectResult) -> list[tuple[str, float]]:
    """An object's ``(class_id, score)`` hypotheses: its top-k, best first (its label alone
    when it has none)."""
    return [(str(name), float(score)) for name, score in o.top_k] or [
        (o.label, float(o.score))]


def _hypothesis_msgs(vision_msgs: dict[str, Any], hypotheses: list[tuple[str, float]],
                     pose: Any = None) -> list:
    """ObjectHypothesisWithPose messages of ``hypotheses``, each with ``pose`` (a
    geometry_msgs/Pose: the placed object's centre) when given."""
    out = []
    for class_id, score in hypotheses:
        hyp = vision_msgs["ObjectHypothesisWithPose"]()
        hyp.hypothesis.class_id, hyp.hypothesis.score = class_id, score
        if pose is not None:
            hyp.pose.pose = pose
        out.append(hyp)
    return out


def detections_msg(vision_msgs: dict[str, Any], src: Image, objects: Sequence[ObjectResult]):
    """A Detection2DArray (``src``'s header) of :func:`detection_entries`: one detection per
    known object, ``results`` its top-k hypotheses (each with the object's centre as its
    ``pose`` when it was placed with depth), ``id`` the object's track id with object
    tracking (:attr:`ObjectResult.track_id`, as a string), else empty.
    Works with vision_msgs 3 and >= 4 (Jazzy)."""
    arr = vision_msgs["Detection2DArray"]()
    arr.header = src.header
    known = [o for o in objects if o.known]      # detection_entries keeps these, in order
    for o, ((cx, cy, w, h), hypotheses) in zip(known, detection_entries(objects)):
        det = vision_msgs["Detection2D"]()
        det.header = src.header
        center = det.bbox.center
        if hasattr(center, "position"):  # vision_msgs >= 4 (Jazzy): vision_msgs/Pose2D
            center.position.x, center.position.y = cx, cy
        else:  # vision_msgs 3: geometry_msgs/Pose2D
            center.x, center.y = cx, cy
        det.bbox.size_x, det.bbox.size_y = w, h
        det.id = _track_id(o)
        det.results = _hypothesis_msgs(vision_msgs, hypotheses, _centre_pose(o))
        arr.detections.append(det)
    return arr


def _track_id(o: ObjectResult) -> str:
    """A detection's ``id``: the object's track id as a string, empty when not tracked."""
    return "" if o.track_id is None else str(int(o.track_id))


def _centre_pose(o: ObjectResult):
    """A placed object's centre (camera frame, metres) as a geometry_msgs/Pose (identity
    orientation), or None when it was not placed with depth."""
    if o.position is None:
        return None
    from geometry_msgs.msg import Pose

    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in o.position)
    return pose


def detections_3d_msg(vision_msgs: dict[str, Any], src: Image,
                      objects: Sequence[ObjectResult]):
    """A Detection3DArray (``src``'s header: the camera's optical frame) with one
    Detection3D per *known* object placed with depth (:attr:`ObjectResult.position`):
    ``bbox`` its 3-D box (centre, the box axes' orientation, size across / along / height in
    metres), ``results`` its top-k hypotheses as in ``~/detections``, each with the box
    centre as its pose, ``id`` as in ``~/detections``. Objects without a placement are left
    out."""
    arr = vision_msgs["Detection3DArray"]()
    arr.header = src.header
    for o in objects:
        if not o.known or o.position is None or o.size is None:
            continue
        det = vision_msgs["Detection3D"]()
        det.header = src.header
        centre = det.bbox.center
        centre.position.x, centre.position.y, centre.position.z = (float(v) for v in o.position)
        qx, qy, qz, qw = o.orientation or (0.0, 0.0, 0.0, 1.0)
        centre.orientation.x, centre.orientation.y = float(qx), float(qy)
        centre.orientation.z, centre.orientation.w = float(qz), float(qw)
        det.bbox.size.x, det.bbox.size.y, det.bbox.size.z = (float(v) for v in o.size)
        det.id = _track_id(o)
        det.results = _hypothesis_msgs(vision_msgs, _hypotheses(o), centre)
        arr.detections.append(det)
    return arr


def label_info_msg(vision_msgs: dict[str, Any], names: Sequence[str], threshold: float,
                   stamp: Any = None):
    """The ``~/label_info`` message (vision_msgs/LabelInfo) of the active vocabulary: one
    VisionClass per label, ``class_id`` its index in the vocabulary and ``class_name`` its
    name (the ``class_id`` string of ``~/detections``); ``threshold`` the open-set score
    threshold in effect (objects scoring below it are ``unknown`` and not detected)."""
    msg = vision_msgs["LabelInfo"]()
    if stamp is not None:
        msg.header.stamp = stamp
    for i, name in enumerate(names):
        msg.class_map.append(vision_msgs["VisionClass"](class_id=i, class_name=str(name)))
    msg.threshold = float(threshold)
    return msg
