"""Ground truth in JSON Lines sidecar files (ROS-free): :func:`read_ground_truth_sidecar`
and :func:`write_ground_truth_sidecar`, in the format :mod:`.bag_io`'s module docstring
describes, for bags recorded on a robot and labelled afterwards.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

from vl_distill_ros.atomic_io import atomic_write_bytes

from vl_distill_ros.bags.bag_frames import (GroundTruthObject, ns_to_stamp, object_document,
                                            stamp_to_ns)
from vl_distill_ros.bags.raw_io import BagError

__all__ = ["read_ground_truth_sidecar", "write_ground_truth_sidecar", "parse_stamp",
           "parse_objects", "MAX_POSITION_M"]

#: Largest coordinate (metres) a ground-truth ``position`` may have.
MAX_POSITION_M = 1000.0


def parse_stamp(value: Any, where: str) -> int:
    """A JSON ``{"sec": int, "nanosec": int}`` stamp as nanoseconds.

    Raises:
        BagError: not such a mapping, or a negative or out-of-range value (``where`` in the
            message).
    """
    if not isinstance(value, dict) or set(value) - {"sec", "nanosec"} or "sec" not in value:
        raise BagError(f"{where}: 'stamp' must be {{\"sec\": int, \"nanosec\": int}}, "
                       f"got {value!r}")
    sec, nanosec = value.get("sec"), value.get("nanosec", 0)
    for name, v in (("sec", sec), ("nanosec", nanosec)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise BagError(f"{where}: stamp.{name} must be a non-negative integer, got {v!r}")
    if nanosec >= 1_000_000_000:
        raise BagError(f"{where}: stamp.nanosec must be < 1000000000, got {nanosec}")
    return stamp_to_ns(sec, nanosec)


def parse_objects(value: Any, where: str) -> list[GroundTruthObject]:
    """A JSON list of ``{"bbox": [x, y, w, h], "label": str, "key": str}`` objects, each
    optionally with a ``visible_fraction`` in [0, 1] and a ``position`` ``[x, y, z]``
    (metres, the camera's optical frame, ``z`` > 0).

    Raises:
        BagError: not such a list (``where`` and the object's index in the message).
    """
    if not isinstance(value, list):
        raise BagError(f"{where}: 'objects' must be a list, got {type(value).__name__}")
    out = []
    for j, obj in enumerate(value):
        here = f"{where}: objects[{j}]"
        if not isinstance(obj, dict):
            raise BagError(f"{here} must be an object with 'bbox' and 'label'")
        bbox, label = obj.get("bbox"), obj.get("label")
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                           and math.isfinite(v) for v in bbox)):
            raise BagError(f"{here}: 'bbox' must be [x, y, w, h] (4 numbers), got {bbox!r}")
        if bbox[2] < 0 or bbox[3] < 0:
            raise BagError(f"{here}: bbox width and height must be >= 0, got {bbox!r}")
        if not isinstance(label, str) or not label.strip():
            raise BagError(f"{here}: 'label' must be a non-empty string, got {label!r}")
        key = obj.get("key", "")
        if not isinstance(key, str):
            raise BagError(f"{here}: 'key' must be a string, got {key!r}")
        visible = obj.get("visible_fraction")
        if visible is not None and (isinstance(visible, bool)
                                    or not isinstance(visible, (int, float))
                                    or not 0.0 <= visible <= 1.0):
            raise BagError(f"{here}: 'visible_fraction' must be a number in [0, 1], "
                           f"got {visible!r}")
        position = obj.get("position")
        if position is not None and (
                not isinstance(position, list) or len(position) != 3
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                           and math.isfinite(v) and abs(v) <= MAX_POSITION_M for v in position)
                or not position[2] > 0):
            raise BagError(f"{here}: 'position' must be [x, y, z] (3 numbers in metres, "
                           f"|v| <= {MAX_POSITION_M:g}, z > 0), got {position!r}")
        out.append(GroundTruthObject(tuple(int(round(v)) for v in bbox), label, key,
                                     None if visible is None else float(visible),
                                     None if position is None
                                     else tuple(float(v) for v in position)))
    return out


def read_ground_truth_sidecar(path: str | Path, repeated: set | None = None
                              ) -> dict[tuple[str, int], list[GroundTruthObject]]:
    """Read a JSON Lines ground-truth file (format in the module docstring).

    Returns ``{(camera topic, stamp ns): objects}`` (a key given on several lines: the last;
    such keys are added to ``repeated``). Raises :class:`BagError` naming the file and line
    of the first bad line.
    """
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BagError(f"ground-truth file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BagError(f"cannot read ground-truth file {path}: {exc}") from None
    out: dict[tuple[str, int], list[GroundTruthObject]] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BagError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(entry, dict):
            raise BagError(f"{where}: expected a JSON object with 'stamp', 'camera' and "
                           f"'objects', got {type(entry).__name__}")
        missing = [k for k in ("stamp", "camera", "objects") if k not in entry]
        if missing:
            raise BagError(f"{where}: missing {', '.join(repr(m) for m in missing)}")
        camera = entry["camera"]
        if not isinstance(camera, str) or not camera.startswith("/"):
            raise BagError(f"{where}: 'camera' must be the image topic (e.g. "
                           f"\"/camera/image_raw\"), got {camera!r}")
        objects = parse_objects(entry["objects"], where)
        key = (camera, parse_stamp(entry["stamp"], where))
        if key in out and repeated is not None:
            repeated.add(key)
        out[key] = objects
    return out


def write_ground_truth_sidecar(path: str | Path,
                               entries: Iterable[tuple[str, int, Sequence[GroundTruthObject]]]
                               ) -> Path:
    """Write ``(camera topic, stamp ns, objects)`` entries as a JSON Lines sidecar file
    (atomically: a temporary file renamed into place)."""
    path = Path(path).expanduser()
    lines = []
    for camera, stamp_ns, objects in entries:
        sec, nanosec = ns_to_stamp(stamp_ns)
        obj_list = []
        for o in objects:  # the /ground_truth document's object, an empty key left out
            item = object_document(o)
            if not o.key:
                del item["key"]
            obj_list.append(item)
        lines.append(json.dumps({"stamp": {"sec": sec, "nanosec": nanosec}, "camera": camera,
                                 "objects": obj_list}, separators=(",", ":")))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, "".join(line + "\n" for line in lines).encode("utf-8"))
    return path
