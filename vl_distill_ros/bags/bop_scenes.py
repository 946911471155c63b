"""Real RGB-D frames with ground truth from scenes in the BOP benchmark's format, as
:class:`~.bag_frames.BagFrame` objects for :func:`~.bag_writer.write_camera_bag` (ROS-free).

The BOP benchmark (bop.felk.cvut.cz; Hodan et al., ECCV 2018) distributes real object
datasets in one layout, among them **YCB-V**: the real frames of YCB-Video (Xiang et al.,
RSS 2018; an Asus Xtion looking at YCB objects on tables, 640x480, registered depth). A
scene folder holds::

    rgb/000001.png (or .jpg; gray/ for grey cameras)   depth/000001.png (16-bit)
    scene_camera.json    {"1": {"cam_K": [fx, 0, cx, 0, fy, cy, 0, 0, 1], "depth_scale": 0.1}}
    scene_gt.json        {"1": [{"obj_id": 2, "cam_R_m2c": [...], "cam_t_m2c": [...]}, ...]}
    scene_gt_info.json   {"1": [{"bbox_visib": [x, y, w, h], "visib_fract": 0.93}, ...]}

``depth_scale`` is the millimetres one unit of the depth PNG holds (YCB-V: 0.1); the lists
of ``scene_gt.json`` and ``scene_gt_info.json`` are parallel, one entry per object. An
object's ground-truth box is its ``bbox_visib`` (the box of what is in view, as the project's
rendered bags label); objects less visible than ``min_visible`` are left out, as they are
from rendered bags (``make-bag`` labels what is in view).

With the dataset's ``models/models_info.json`` (:func:`load_models_info`), each object's
pose (``cam_R_m2c``, ``cam_t_m2c``) places the centre of its model's bounding box in the
camera's frame: the ground truth's ``position``, which ``replay-eval`` scores the node's
published positions against.

Object ids become the node's label names through an :class:`ObjectNames` table: YCB-V's 21
built in (:data:`YCBV_OBJECT_KEYS`, the YCB model keys, named through a vocabulary file), or
a YAML file mapping each id to a vocabulary key or a name.

Every file is checked before it is used: a JSON file over :data:`MAX_JSON_BYTES`, an image
over ``max_pixels``, a depth image of another size than its colour image, a bad ``cam_K`` or
``depth_scale`` or an unknown object id raise :class:`~.raw_io.BagError` naming the file.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from vl_distill_ros.atomic_io import FileRejected, read_regular_file
from vl_distill_ros.bags.bag_frames import BagFrame, GroundTruthObject
from vl_distill_ros.bags.raw_io import BagError

__all__ = ["YCBV_OBJECT_KEYS", "MAX_JSON_BYTES", "MAX_IMAGE_BYTES", "ObjectNames",
           "BopScene", "read_bop_scene", "scene_frames", "load_object_names",
           "ycbv_object_names", "load_models_info", "MAX_TRANSLATION_MM"]

#: YCB-V's object ids (BOP) and the YCB model keys they are (YCB-Video's 21 objects, in the
#: dataset's own order).
YCBV_OBJECT_KEYS: dict[int, str] = {
    1: "002_master_chef_can", 2: "003_cracker_box", 3: "004_sugar_box",
    4: "005_tomato_soup_can", 5: "006_mustard_bottle", 6: "007_tuna_fish_can",
    7: "008_pudding_box", 8: "009_gelatin_box", 9: "010_potted_meat_can", 10: "011_banana",
    11: "019_pitcher_base", 12: "021_bleach_cleanser", 13: "024_bowl", 14: "025_mug",
    15: "035_power_drill", 16: "036_wood_block", 17: "037_scissors", 18: "040_large_marker",
    19: "051_large_clamp", 20: "052_extra_large_clamp", 21: "061_foam_brick"}

#: Largest JSON file read (a BOP scene's annotations of a few thousand frames are a few MB).
MAX_JSON_BYTES = 256 * 1024 * 1024
#: Largest image file read.
MAX_IMAGE_BYTES = 256 * 1024 * 1024
#: Largest translation (millimetres) of a pose or model extent taken.
MAX_TRANSLATION_MM = 1e6
#: Largest object id taken (BOP's ids are small integers).
MAX_OBJECT_ID = 1_000_000
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class ObjectNames:
    """What each object id is called: ``(label, key)`` per id (``key`` may be empty)."""

    names: Mapping[int, tuple[str, str]]
    #: Where the table came from, for messages.
    source: str = ""

    def lookup(self, obj_id: int, where: str) -> tuple[str, str]:
        """``(label, key)`` of ``obj_id``.

        Raises:
            BagError: the id is not in the table (``where`` says which frame had it).
        """
        try:
            return self.names[obj_id]
        except KeyError:
            known = ", ".join(str(k) for k in sorted(self.names)[:30])
            raise BagError(f"{where}: object id {obj_id} is not in {self.source or 'the table'}"
                           f" (ids known: {known}); name it in a --objects YAML file "
                           "(id: vocabulary key or name)") from None


def ycbv_object_names(vocabulary: Any) -> ObjectNames:
    """YCB-V's 21 ids named through ``vocabulary`` (a
    :class:`~vl_distill_ros.model.vocabulary.Vocabulary` holding their YCB keys, e.g.
    ``config/ycb_vocabulary.yaml``).

    Raises:
        BagError: a YCB-V key is missing from the vocabulary.
    """
    by_key = {lb.key: lb.name for lb in vocabulary}
    missing = [k for k in YCBV_OBJECT_KEYS.values() if k not in by_key]
    if missing:
        raise BagError(f"the vocabulary has no label for the YCB-V objects {missing}: use a "
                       "vocabulary with the YCB model keys (config/ycb_vocabulary.yaml)")
    return ObjectNames({i: (by_key[k], k) for i, k in YCBV_OBJECT_KEYS.items()}, "YCB-V's ids")


def load_object_names(path: str | Path, vocabulary: Any = None) -> ObjectNames:
    """An id table from a YAML (or JSON) file mapping each object id to a vocabulary key
    (named as ``vocabulary`` names it, the key kept for ID/OOD grouping) or to a name.

    Raises:
        BagError: the file is missing, too large or not a mapping of ids to non-empty
            strings.
    """
    import yaml

    path = Path(path)
    text = _read_bytes(path, MAX_JSON_BYTES, "object names").decode("utf-8", "replace")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BagError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise BagError(f"{path}: expected a mapping of object ids to names, e.g. '1: mug'")
    by_key = {lb.key: lb.name for lb in vocabulary} if vocabulary is not None else {}
    names: dict[int, tuple[str, str]] = {}
    for raw_id, value in data.items():
        obj_id = _object_id(raw_id, str(path))
        if not isinstance(value, str) or not value.strip() or len(value) > 200:
            raise BagError(f"{path}: object {obj_id} must map to a vocabulary key or a name "
                           f"(a non-empty string of at most 200 characters), got {value!r}")
        value = value.strip()
        names[obj_id] = (by_key[value], value) if value in by_key else (value, "")
    return ObjectNames(names, str(path))


def _object_id(raw: Any, where: str, what: str = "object id") -> int:
    """``raw`` (a JSON or YAML key or value) as an id in ``[0, MAX_OBJECT_ID]``."""
    try:
        obj_id = int(raw)
    except (TypeError, ValueError, OverflowError):    # OverflowError: 1e999 is infinity
        raise BagError(f"{where}: {what} {raw!r} is not an integer") from None
    if isinstance(raw, float) or not 0 <= obj_id <= MAX_OBJECT_ID:
        raise BagError(f"{where}: {what} {raw!r} is not an integer in [0, {MAX_OBJECT_ID}]")
    return obj_id


def _read_bytes(path: Path, limit: int, what: str) -> bytes:
    """``path`` whole (:func:`~vl_distill_ros.atomic_io.read_regular_file`: a regular file of
    at most ``limit`` bytes, never a FIFO or a device), errors as :class:`BagError`."""
    try:
        return read_regular_file(path, limit)
    except FileNotFoundError:
        raise BagError(f"{path}: no such {what} file") from None
    except FileRejected as exc:
        raise BagError(f"cannot read the {what} file: {exc}") from None
    except OSError as exc:
        raise BagError(f"{path}: cannot read the {what} file: {exc}") from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(_read_bytes(path, MAX_JSON_BYTES, "JSON"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BagError(f"{path}: not valid JSON ({exc})") from None


@dataclass
class BopScene:
    """One BOP scene folder's annotations, checked (:func:`read_bop_scene`)."""

    folder: Path
    #: Image ids in increasing order.
    image_ids: list[int]
    #: Per image id: ``(fx, fy, cx, cy)`` and the depth PNG's millimetres per unit.
    cameras: dict[int, tuple[tuple[float, float, float, float], float]]
    #: Per image id: ``(obj_id, (x, y, w, h) of its visible part, visible fraction, pose)``,
    #: the pose ``(R, t)`` of the model in the camera (``cam_R_m2c`` as a 3x3 array,
    #: ``cam_t_m2c`` in millimetres) or None where ``scene_gt.json`` gives none.
    objects: dict[int, list[tuple[int, tuple[int, int, int, int], float,
                                  tuple[np.ndarray, np.ndarray] | None]]] = \
        field(default_factory=dict)


def read_bop_scene(folder: str | Path) -> BopScene:
    """Read and check a BOP scene folder's ``scene_camera.json``, ``scene_gt.json`` and
    ``scene_gt_info.json`` (the images are read by :func:`scene_frames`).

    Raises:
        BagError: a missing or malformed file, a bad ``cam_K`` or ``depth_scale``, lists of
            ``scene_gt.json`` and ``scene_gt_info.json`` of different lengths, an image one
            of the three files has and another lacks.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise BagError(f"{folder}: no such scene folder")
    if not (folder / "scene_camera.json").is_file():
        raise BagError(f"{folder}: not a BOP scene folder (no scene_camera.json; a BOP "
                       "dataset's scenes are its test/NNNNNN or train_real/NNNNNN folders)")
    cams_raw = _read_json(folder / "scene_camera.json")
    gt_raw = _read_json(folder / "scene_gt.json")
    info_raw = _read_json(folder / "scene_gt_info.json")
    for name, doc in (("scene_camera.json", cams_raw), ("scene_gt.json", gt_raw),
                      ("scene_gt_info.json", info_raw)):
        if not isinstance(doc, dict):
            raise BagError(f"{folder / name}: expected a mapping of image ids")
    cameras = {}
    for image_id, cam in _by_image_id(cams_raw, folder / "scene_camera.json").items():
        cameras[image_id] = _camera(cam, f"{folder / 'scene_camera.json'}, image {image_id}")
    gt_by_id = _by_image_id(gt_raw, folder / "scene_gt.json")
    info_by_id = _by_image_id(info_raw, folder / "scene_gt_info.json")
    for name, table in (("scene_gt.json", gt_by_id), ("scene_gt_info.json", info_by_id)):
        missing = sorted(set(cameras) - set(table))
        extra = sorted(set(table) - set(cameras))
        if missing or extra:   # a frame without annotation would score as empty of objects
            raise BagError(f"{folder / name}: " + (
                f"no entry for images {missing[:5]} of scene_camera.json" if missing else
                f"images {extra[:5]} have no entry in scene_camera.json (no camera)")
                + (" ..." if len(missing or extra) > 5 else ""))
    objects = {}
    for image_id in cameras:
        gts, infos = gt_by_id[image_id], info_by_id[image_id]
        where = f"{folder}, image {image_id}"
        if not isinstance(gts, list) or not isinstance(infos, list) or len(gts) != len(infos):
            raise BagError(f"{where}: scene_gt.json and scene_gt_info.json must hold lists of "
                           f"the same length, got {type(gts).__name__} of "
                           f"{len(gts) if isinstance(gts, list) else '?'} and "
                           f"{type(infos).__name__} of "
                           f"{len(infos) if isinstance(infos, list) else '?'}")
        objects[image_id] = [_object(gt, info, where) for gt, info in zip(gts, infos)]
    return BopScene(folder, sorted(cameras), cameras, objects)


def _by_image_id(doc: dict, path: Path) -> dict[int, Any]:
    """``doc`` keyed by image id (``"1"`` and ``"000001"`` alike); a repeated id is an
    error."""
    out: dict[int, Any] = {}
    for raw_id, value in doc.items():
        image_id = _object_id(raw_id, str(path), "image id")
        if image_id in out:
            raise BagError(f"{path}: image id {image_id} is given twice")
        out[image_id] = value
    return out


def _camera(cam: Any, where: str) -> tuple[tuple[float, float, float, float], float]:
    if not isinstance(cam, dict):
        raise BagError(f"{where}: expected a mapping with cam_K and depth_scale")
    k = cam.get("cam_K")
    try:
        k = [float(v) for v in k]
    except (TypeError, ValueError):
        k = None
    if k is None or len(k) != 9 or not all(math.isfinite(v) for v in k) or k[0] <= 0 \
            or k[4] <= 0:
        raise BagError(f"{where}: cam_K must be 9 finite numbers (row-wise K) with fx, fy > 0, "
                       f"got {cam.get('cam_K')!r}")
    scale = cam.get("depth_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) \
            or not math.isfinite(scale) or not 0 < scale <= 1000:
        raise BagError(f"{where}: depth_scale (millimetres per depth unit) must be in (0, 1000],"
                       f" got {scale!r}")
    return (k[0], k[4], k[2], k[5]), float(scale)


def _object(gt: Any, info: Any, where: str
            ) -> tuple[int, tuple[int, int, int, int], float,
                       tuple[np.ndarray, np.ndarray] | None]:
    if not isinstance(gt, dict) or not isinstance(info, dict):
        raise BagError(f"{where}: each scene_gt / scene_gt_info entry must be a mapping")
    obj_id = _object_id(gt.get("obj_id"), where)
    box = info.get("bbox_visib")
    try:
        box = tuple(int(round(float(v))) for v in box)
    except (TypeError, ValueError, OverflowError):
        box = ()
    fract = info.get("visib_fract", 1.0)
    if len(box) != 4 or isinstance(fract, bool) or not isinstance(fract, (int, float)) \
            or not math.isfinite(fract):
        raise BagError(f"{where}: object {obj_id} needs bbox_visib [x, y, w, h] and a numeric "
                       f"visib_fract, got {info.get('bbox_visib')!r}, {info.get('visib_fract')!r}")
    return obj_id, box, float(fract), _pose(gt, f"{where}: object {obj_id}")


def _pose(gt: Mapping[str, Any], where: str) -> tuple[np.ndarray, np.ndarray] | None:
    """``cam_R_m2c`` (row-major 3x3) and ``cam_t_m2c`` (mm) of a ``scene_gt.json`` entry,
    or None when it has neither."""
    if "cam_R_m2c" not in gt and "cam_t_m2c" not in gt:
        return None
    try:
        rot = np.asarray([float(v) for v in gt.get("cam_R_m2c")], np.float64).reshape(3, 3)
        t = np.asarray([float(v) for v in gt.get("cam_t_m2c")], np.float64).reshape(3)
    except (TypeError, ValueError):
        rot = t = None
    if rot is None or t is None or not np.all(np.isfinite(rot)) or not np.all(np.isfinite(t)) \
            or not np.allclose(rot @ rot.T, np.eye(3), atol=1e-3) \
            or np.abs(t).max() > MAX_TRANSLATION_MM:
        raise BagError(f"{where}: cam_R_m2c must be a rotation (9 numbers, row-wise) and "
                       f"cam_t_m2c 3 numbers in millimetres (|t| <= {MAX_TRANSLATION_MM:g}), "
                       f"got {gt.get('cam_R_m2c')!r}, {gt.get('cam_t_m2c')!r}")
    return rot, t


def load_models_info(path: str | Path) -> dict[int, np.ndarray]:
    """The centre of each model's bounding box in its own frame (millimetres), from a BOP
    dataset's ``models/models_info.json`` (``{"1": {"min_x": .., "size_x": .., ...}}``).

    Raises:
        BagError: the file is missing, too large, or not such a mapping of finite numbers.
    """
    path = Path(path).expanduser()
    data = _read_json(path)
    if not isinstance(data, dict) or not data:
        raise BagError(f"{path}: expected a mapping of object ids to model extents "
                       "(BOP's models_info.json)")
    centres: dict[int, np.ndarray] = {}
    for raw_id, info in data.items():
        obj_id = _object_id(raw_id, str(path))
        try:
            lo = np.array([float(info[f"min_{a}"]) for a in "xyz"])
            size = np.array([float(info[f"size_{a}"]) for a in "xyz"])
        except (KeyError, TypeError, ValueError):
            raise BagError(f"{path}: object {obj_id} needs min_x, min_y, min_z, size_x, size_y "
                           f"and size_z (millimetres), got {info!r}") from None
        centre = lo + 0.5 * size
        if not np.all(np.isfinite(centre)) or np.abs(centre).max() > MAX_TRANSLATION_MM \
                or np.any(size < 0):
            raise BagError(f"{path}: object {obj_id} has extents out of range: {info!r}")
        centres[obj_id] = centre
    return centres


def _image_file(folder: Path, kinds: Sequence[str], image_id: int) -> Path | None:
    for kind in kinds:
        for suffix in _IMAGE_SUFFIXES:
            path = folder / kind / f"{image_id:06d}{suffix}"
            if path.exists():   # not only a regular file: anything else is refused by name
                return path
    return None


def _read_colour(path: Path, max_pixels: int) -> np.ndarray:
    from vl_distill_ros.perception.compressed_codec import decode_compressed_image, payload_kind
    from vl_distill_ros.perception.image_codec import ImageDecodeError

    buf = np.frombuffer(_read_bytes(path, MAX_IMAGE_BYTES, "image"), np.uint8)
    try:
        return decode_compressed_image(payload_kind(buf), buf, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        raise BagError(f"{path}: {exc}") from None


def _read_depth(path: Path, mm_per_unit: float, max_pixels: int) -> np.ndarray:
    from vl_distill_ros.perception.compressed_codec import decode_compressed_depth
    from vl_distill_ros.perception.image_codec import ImageDecodeError

    buf = np.frombuffer(_read_bytes(path, MAX_IMAGE_BYTES, "depth image"), np.uint8)
    try:
        return decode_compressed_depth("16UC1; png compressed mono16", buf, max_pixels,
                                       unit_m=mm_per_unit / 1000.0)
    except ImageDecodeError as exc:
        raise BagError(f"{path}: {exc}") from None


def _clip_box(box: tuple[int, int, int, int], width: int, height: int
              ) -> tuple[int, int, int, int] | None:
    x0, y0 = max(box[0], 0), max(box[1], 0)
    x1, y1 = min(box[0] + box[2], width), min(box[1] + box[3], height)
    return (x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None


def scene_frames(scene: BopScene, names: ObjectNames, start_ns: int, period_ns: float,
                 depth: bool = True, min_visible: float = 0.1, every: int = 1,
                 max_frames: int = 0, max_pixels: int = 50_000_000,
                 first_index: int = 0,
                 model_centres: Mapping[int, np.ndarray] | None = None) -> Iterator[BagFrame]:
    """The frames of ``scene`` (every ``every``-th image id, at most ``max_frames``; 0: all)
    as :class:`BagFrame` objects stamped ``start_ns + (first_index + i) * period_ns``: the
    colour image (grey replicated to RGB), with ``depth`` its registered depth in metres and
    its intrinsics, and the objects at least ``min_visible`` in view, boxed by their visible
    part (clipped to the image; empty boxes left out). With ``model_centres``
    (:func:`load_models_info`) each object whose pose is known also gets its ``position``:
    the centre of its model's bounding box in the camera's frame, metres.

    Raises:
        BagError: a missing or unreadable image, a depth image of another size than its
            colour image (BOP's depth is registered to it), an unknown object id.
    """
    if every < 1:
        raise BagError(f"every must be at least 1, got {every}")
    ids = scene.image_ids[::every]
    if max_frames > 0:
        ids = ids[:max_frames]
    for i, image_id in enumerate(ids):
        where = f"{scene.folder}, image {image_id}"
        colour_path = _image_file(scene.folder, ("rgb", "gray"), image_id)
        if colour_path is None:
            raise BagError(f"{where}: no rgb/{image_id:06d}.png (.jpg) or gray/ image")
        image = _read_colour(colour_path, max_pixels)
        height, width = image.shape[:2]
        intrinsics, mm_per_unit = scene.cameras[image_id]
        depth_m = None
        if depth:
            depth_path = _image_file(scene.folder, ("depth",), image_id)
            if depth_path is None:
                raise BagError(f"{where}: no depth/{image_id:06d}.png (use --no-depth for "
                               "colour only)")
            depth_m = _read_depth(depth_path, mm_per_unit, max_pixels)
            if depth_m.shape != (height, width):
                raise BagError(f"{depth_path}: depth of {depth_m.shape[1]}x{depth_m.shape[0]} "
                               f"does not match its colour image of {width}x{height} (BOP's "
                               "depth is registered to the colour image)")
        objects = []
        for obj_id, box, fract, pose in scene.objects.get(image_id, []):
            label, key = names.lookup(obj_id, where)
            clipped = _clip_box(box, width, height)
            if clipped is None or fract < min_visible:
                continue
            position = None
            if pose is not None and model_centres is not None and obj_id in model_centres:
                centre = (pose[0] @ model_centres[obj_id] + pose[1]) / 1000.0
                if centre[2] > 0:
                    position = (float(centre[0]), float(centre[1]), float(centre[2]))
            objects.append(GroundTruthObject(clipped, label, key, min(1.0, max(0.0, fract)),
                                             position))
        yield BagFrame(int(start_ns + round((first_index + i) * period_ns)), image, objects,
                       depth=depth_m, intrinsics=intrinsics if depth else None)
