"""Every parameter of ``vl_distill_node``, declared up front with a descriptor.

:data:`PARAMETERS` is the single source of truth: :func:`declare_parameters` declares each
entry on the node with a :class:`rcl_interfaces.msg.ParameterDescriptor` (description,
type, ``read_only`` for what only takes effect at start-up, and integer/floating-point
ranges that rclpy enforces on every set), ``config/vl_distill.yaml`` lists the same names
with the same defaults, and ``README.md`` documents them in a table (a test checks all
three agree).

The table itself is ROS-free (types are named by strings), so it can be read without rclpy.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from rclpy.node import Node

#: Parameter types used here -> rcl_interfaces ParameterType constant names.
TYPE_NAMES: dict[str, str] = {
    "bool": "PARAMETER_BOOL",
    "integer": "PARAMETER_INTEGER",
    "double": "PARAMETER_DOUBLE",
    "string": "PARAMETER_STRING",
    "string_array": "PARAMETER_STRING_ARRAY",
    "integer_array": "PARAMETER_INTEGER_ARRAY",
}


def default_model_path() -> Path:
    """The bundle an empty ``model_path`` means: the packaged
    ``vl_distill_ros/bundles/default_student.vdb``."""
    try:
        from importlib.resources import files

        return Path(str(files("vl_distill_ros") / "bundles" / "default_student.vdb"))
    except (ImportError, ModuleNotFoundError, TypeError):  # pragma: no cover
        return Path(__file__).resolve().parents[1] / "bundles" / "default_student.vdb"


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter: name, default, type, documentation and constraints."""

    name: str
    default: Any
    type: str
    description: str
    read_only: bool = False
    #: (from, to) inclusive bounds, enforced by rclpy for integer/double parameters.
    range: tuple[float, float] | None = None
    #: Free-text constraints shown by ``ros2 param describe`` (e.g. allowed values).
    constraints: str = ""


#: Every parameter of the node, in the order they are declared and documented.
PARAMETERS: tuple[ParamSpec, ...] = (
    # -- start-up (read-only) -----------------------------------------------------------------
    ParamSpec("model_path", "", "string",
              "Exported student bundle (.vdb) to load. Empty: the bundle shipped with the "
              "package (vl_distill_ros/bundles/default_student.vdb).", read_only=True),
    ParamSpec("image_topics", ["image"], "string_array",
              "Camera topics (sensor_msgs/Image) to subscribe to; a topic ending in "
              "/compressed (after remapping) is read as sensor_msgs/CompressedImage (JPEG or "
              "PNG, image_transport's compressed topic), one ending in /zstd as "
              "zstd_image_transport's. Relative names resolve in the node's "
              "namespace, so remapping 'image' works as usual. One model serves all of them: "
              "at most 32 cameras, each listed once (after name resolution and remapping).",
              read_only=True, constraints="1..32 distinct topics"),
    ParamSpec("depth_topics", [], "string_array",
              "Registered depth images (sensor_msgs/Image, 16UC1 in mm or 32FC1 in m, aligned "
              "to the colour image; a topic ending in /compressedDepth is read as "
              "image_transport's compressedDepth PNG, one ending in /zstd as "
              "zstd_image_transport's), one per image_topics entry in the "
              "same order (\"\" for a camera without depth), or empty for colour only; a "
              "depth camera's own (unregistered) images with depth_camera_info_topics. "
              "Paired with colour frames by header stamp. Each camera's own topic (none "
              "listed twice).", read_only=True,
              constraints="empty or len(image_topics) entries, distinct topics or \"\""),
    ParamSpec("camera_info_topics", [], "string_array",
              "sensor_msgs/CameraInfo of each colour camera (its K, distortion_model and d "
              "give the rays depth is back-projected along), one per image_topics entry "
              "(\"\" where depth_topics has \"\"); needed with depth_topics.", read_only=True,
              constraints="empty or len(image_topics) entries, \"\" where depth_topics has \"\""),
    ParamSpec("depth_camera_info_topics", [], "string_array",
              "For depth that is not registered to its colour image (a driver's own depth "
              "image, e.g. a RealSense without align_depth): the depth camera's "
              "sensor_msgs/CameraInfo, one per image_topics entry (\"\" for a camera whose "
              "depth is registered), or empty: all depth is registered. Such depth is "
              "aligned to the colour camera with depth_to_colour_poses.", read_only=True,
              constraints="empty or len(image_topics) entries"),
    ParamSpec("depth_to_colour_poses", [], "string_array",
              "One per depth_camera_info_topics entry: \"x y z qx qy qz qw\", the depth "
              "camera's optical frame in the colour camera's optical frame (metres and a "
              "quaternion, as 'ros2 run tf2_ros tf2_echo COLOUR_OPTICAL_FRAME "
              "DEPTH_OPTICAL_FRAME' prints it); \"\" where that entry is \"\", or, for a "
              "depth camera, to read the pose from /tf_static (from the depth image's frame_id "
              "to the colour image's; needs tf2_msgs).",
              read_only=True, constraints="as depth_camera_info_topics"),
    ParamSpec("depth_sync_tolerance", 0.02, "double",
              "Seconds a depth image's stamp may differ from its colour frame's (exact stamps "
              "win, else the nearest within this); a colour frame with no partner is "
              "processed colour-only and counted in /diagnostics.", read_only=True,
              range=(0.0, 1.0)),
    ParamSpec("depth_scale", 0.001, "double",
              "Metres per unit of a 16-bit depth image (16UC1, mono16, compressedDepth 16UC1): "
              "0.001, millimetres, as REP 118 and most drivers have it; 0.00025 for an L515's "
              "raw units, 0.0002 for datasets stored at 5000 per metre. 32FC1 is metres "
              "whatever this is.", read_only=True, range=(1e-6, 0.1)),
    ParamSpec("qos_reliability", "best_effort", "string",
              "Reliability of the image and depth subscriptions (sensor-data QoS "
              "otherwise). A reliable subscription gets nothing from a best-effort camera: "
              "the camera's /diagnostics status then warns (incompatible_qos), as the log "
              "does.",
              read_only=True, constraints="best_effort or reliable"),
    ParamSpec("qos_depth", 1, "integer",
              "History depth of the image subscriptions. Frames are processed 'latest wins' "
              "per camera regardless, so a deeper queue only adds latency.",
              read_only=True, range=(1, 100)),
    ParamSpec("camera_info_durability", "volatile", "string",
              "Durability of the CameraInfo subscriptions (camera_info_topics, "
              "depth_camera_info_topics): volatile (drivers that publish CameraInfo with "
              "every frame: RealSense, Azure Kinect, Orbbec) or transient_local (a CameraInfo "
              "published once and latched, e.g. a static publisher started before the node: "
              "a volatile subscription never gets it; the subscription is then reliable, "
              "which a volatile or best-effort publisher does not match).",
              read_only=True, constraints="volatile or transient_local"),
    ParamSpec("device", "auto", "string",
              "Torch device of the student: cpu, cuda, cuda:N, or auto (cuda when available).",
              read_only=True),
    ParamSpec("torch_threads", 0, "integer",
              "Intra-op CPU threads for torch (torch.set_num_threads); 0 keeps torch's default.",
              read_only=True, range=(0, 256)),
    ParamSpec("inference_backend", "auto", "string",
              "Student runtime: auto (ONNX Runtime in float32 when it loads and agrees with "
              "PyTorch, else PyTorch), onnxruntime (float32), onnxruntime_int8 (the bundle's "
              "INT8 model: about two thirds of the student's CPU time; the shipped one, its first "
              "5 convolutions in float32, named 1014 seen and 374 unseen objects right on 15 "
              "RGB-D bags where the float student named 1016 and 388, and 419 and 155 on dark, "
              "noisy frames where it named 426 and 160) or torch.",
              read_only=True,
              constraints="auto, onnxruntime, onnxruntime_int8 or torch"),
    ParamSpec("inference_backend_behind", "onnxruntime_int8", "string",
              "Student runtime of the frames processed while the node stays behind its "
              "cameras with proposal_box_net_behind (more than 5% of those frames dropped over "
              "a whole 2 s window, until the hold ends; at once where proposal_box_net_behind "
              "changes nothing, e.g. with crop_source full_frame or rois): onnxruntime_int8 "
              "(the bundle's INT8 model) or same (never change). It replaces only the ONNX "
              "Runtime float32 that inference_backend auto chose, never a runtime you chose; "
              "a bundle without an INT8 model keeps its runtime (/diagnostics: "
              "student_runtime_behind). With one "
              "free core of the 2-core host it gave about an eighth more frames with depth "
              "(see Performance); the shipped INT8 student names nearly as many objects right "
              "as the float one (see inference_backend; about 4% fewer unseen ones on clean "
              "frames, 3% under exposure 0.4 and noise 10). /diagnostics counts the "
              "frames per camera (processed_behind_student).", read_only=True,
              constraints="same or onnxruntime_int8"),
    ParamSpec("inference_threads", 2, "integer",
              "CPU threads of the student runtime (ONNX Runtime intra-op threads, or "
              "torch.set_num_threads for the PyTorch fallback); 0 = the library default.",
              read_only=True, range=(0, 256)),
    ParamSpec("proposal_threads", 2, "integer",
              "2: the box network runs in a second thread while the colour model (and, on "
              "frames with depth and proposal_source auto, the depth proposer) runs (the "
              "same boxes, sooner on 2 cores); 1: one after the other.",
              read_only=True, range=(1, 2)),
    ParamSpec("proposal_box_net_close_topics", [], "string_array",
              "Proposals: the image_topics entries whose frames take the close pass of "
              "proposal_box_net_close_width, with depth too, e.g. a wrist camera's beside a "
              "head camera's on one node (the others are left as with "
              "proposal_box_net_close_width 0); empty: every camera's frames without depth, "
              "and those with depth that says the camera is close (close_view_m).",
              read_only=True,
              constraints="empty or entries of image_topics"),
    ParamSpec("pipelined", True, "bool",
              "Two worker threads: the next frame's decoding, depth pairing and proposals "
              "overlap the current frame's student and publishing (the same labels; on 2 "
              "cores ~2.5 more frames/s with depth, p95 latency still under 100 ms); false: "
              "one thread does both in turn (lowest latency, e.g. p95 ~85 instead of ~96 ms "
              "with depth).",
              read_only=True),
    ParamSpec("warm_text_encoder", True, "bool",
              "Load the teacher's text encoder at start-up, before the cameras are "
              "subscribed, so the first name that is not in the cache costs its embedding "
              "(~0.1 s) instead of the encoder's load (~3 s; start-up takes that much "
              "longer). Costs the encoder's memory (~100 MB for the offline teacher).",
              read_only=True),
    ParamSpec("description_catalogue", True, "bool",
              "Language enrichment for names given without a description (labels alone, or "
              "a vocabulary_file without description fields): each takes the description "
              "the bundle's catalogue holds for it (the shipped one: the 78 YCB objects of "
              "config/ycb_vocabulary.yaml), matched case-insensitively by name or key "
              "(004_sugar_box, sugar_box and Sugar Box find sugar box), and a name written "
              "as a key or identifier is prompted by the catalogue's name or as words; the "
              "published name stays as given. On the second renderer's crops of the 26 "
              "objects, names alone: 466 / 213 seen / unseen right without it, 505 / 237 "
              "with it; false: every label is prompted exactly as given.",
              read_only=True),
    ParamSpec("text_cache_dir", "~/.cache/vl_distill_ros/text_embeddings", "string",
              "Directory of the persistent label text-embedding cache (one file per teacher); "
              "empty disables the disk cache.", read_only=True),
    ParamSpec("vocabulary_store", "", "string",
              "YAML file the active vocabulary is saved to (~/save_vocabulary, "
              "persist_vocabulary). Empty: $ROS_HOME/vl_distill_ros/<namespace.node>"
              ".vocabulary.yaml, the node's full name with '.' for '/' (ROS_HOME defaults "
              "to ~/.ros; a store under the older <namespace_node> name is still read while "
              "the node has none of its own, never saved to).",
              read_only=True),
    ParamSpec("diagnostics_period", 1.0, "double",
              "Seconds between diagnostic_msgs/DiagnosticArray messages on /diagnostics.",
              read_only=True, range=(0.05, 60.0)),
    # -- vocabulary (dynamic) -----------------------------------------------------------------
    ParamSpec("labels", [], "string_array",
              "Active label names. Empty (at start-up or set at runtime): the bundle's "
              "vocabulary with its descriptions. After start-up it shows the active vocabulary, "
              "or the one requested last while it is embedded or when it could not be "
              "(/diagnostics: vocabulary_state error, the active one unchanged). Setting it "
              "alone keeps the descriptions of names that stay and clears the others.",
              constraints="0 (the bundle's) or 1..1000 unique (case-insensitive, '_' read "
                          "as a space, Unicode-normalised, invisible characters aside) "
                          "names that show something, of <= 64 chars, not 'unknown'"),
    ParamSpec("descriptions", [], "string_array",
              "One-sentence appearance descriptions, empty or one per label (same order); "
              "used for language enrichment when the bundle was exported with it; a label "
              "without one takes the bundle's catalogued description "
              "(description_catalogue).",
              constraints="empty or len(labels) entries of <= 300 chars"),
    ParamSpec("vocabulary_file", "", "string",
              "Vocabulary YAML to load (format of config/ycb_vocabulary.yaml). Setting it "
              "replaces labels and descriptions; setting labels clears it."),
    ParamSpec("persist_vocabulary", False, "bool",
              "Save every accepted vocabulary change to vocabulary_store, and start with the "
              "stored vocabulary (it takes precedence over labels/vocabulary_file)."),
    # -- crops (dynamic) ----------------------------------------------------------------------
    ParamSpec("crop_source", "proposals", "string",
              "Where crops come from: proposals (class-agnostic proposer), full_frame (one "
              "crop, e.g. a hand camera) or rois (fixed regions from 'rois').",
              constraints="proposals, full_frame or rois"),
    ParamSpec("rois", [], "integer_array",
              "Fixed regions for crop_source=rois, flattened: [x0, y0, w0, h0, x1, y1, ...] in "
              "pixels. Clipped to each frame; degenerate ones are dropped.",
              constraints="a multiple of 4 integers, at most 256 regions"),
    ParamSpec("proposal_min_area_frac", 0.0004, "double",
              "Proposals: smallest box kept, as a fraction of the frame area.",
              range=(0.0, 1.0)),
    ParamSpec("proposal_max_area_frac", 0.6, "double",
              "Proposals: largest box kept, as a fraction of the frame area.",
              range=(0.0, 1.0)),
    ParamSpec("proposal_max_count", 32, "integer",
              "Proposals: most boxes per frame (the box network's best-scored first); they go "
              "through the student as one batch. A bound on a frame's work, not a filter: a "
              "crowded view has more than 10 objects (10 was the default until session 40).",
              range=(1, 256)),
    ParamSpec("proposal_pad_frac", 0.05, "double",
              "Proposals: fraction of a box's size added on each side.", range=(0.0, 1.0)),
    ParamSpec("proposal_fallback_full_frame", False, "bool",
              "Proposals: classify the whole frame when nothing is proposed (an object filling "
              "the view is larger than proposal_max_area_frac; an empty table then yields one "
              "full-frame object, usually 'unknown')."),
    ParamSpec("proposal_source", "auto", "string",
              "Proposals from colour, from registered depth, or auto: depth boxes fused with "
              "colour boxes where depth is missing or flat, when the frame has depth; colour "
              "otherwise (also for depth when a frame has none).",
              constraints="auto, colour or depth"),
    ParamSpec("proposal_box_net", "default", "string",
              "Proposals: the learned box network that finds objects in colour frames by their "
              "look (objects in contact too): default (the one shipped with the package), "
              "default_int8 (its INT8 copy: about half the network's CPU time, a little less "
              "exact; see Performance), the path of another box network .onnx file "
              "(vl-distill train-box-net), or off for the colour model alone. The colour "
              "model still adds boxes where the network finds nothing.",
              constraints="default, default_int8, off or an existing .onnx file"),
    ParamSpec("proposal_box_net_depth", "same", "string",
              "Proposals: the box network of frames that come with depth (the boxes the "
              "fusion takes): same (proposal_box_net's), or any value proposal_box_net takes. "
              "default_int8 is the slow CPU's option for depth alone: with depth the network is "
              "about half the node's CPU and its INT8 copy costs 60% of that, for nearly the "
              "same proposals but unseen objects named a little less often (see Performance); "
              "frames without depth keep proposal_box_net.",
              constraints="same, default, default_int8, off or an existing .onnx file"),
    ParamSpec("proposal_box_net_behind", "default_int8", "string",
              "Proposals: the box network of frames processed while the node falls behind its "
              "cameras (more than 5% of their frames dropped over 2 s; it tries the usual one "
              "again after 10 s, then after twice as long each time it falls behind again at "
              "once, up to 120 s): same (never change), or any value proposal_box_net takes. "
              "It replaces the shipped network (default) only, never a network you chose. "
              "default_int8: with depth 30 frames/s instead of 25-26 in a slow hour of the "
              "2-core host, a little less exact than the shipped network (see Performance); "
              "a replay that processes every frame (replay-eval --offline) never falls "
              "behind. /diagnostics counts the frames each camera had processed while the node "
              "was behind (processed_behind).",
              constraints="same, default, default_int8, off or an existing .onnx file"),
    ParamSpec("proposal_box_net_threshold", 0.5, "double",
              "Proposals: smallest score of a box network's box (lower finds more objects and "
              "more false boxes).", range=(0.01, 0.99)),
    ParamSpec("proposal_box_net_threads", 2, "integer",
              "Proposals: ONNX Runtime threads of the box network. It is the longest step of a "
              "frame with depth and runs beside the depth proposer and the student, so a second "
              "thread takes up the cores they leave idle (on 2 cores the node with depth ran "
              "about 7% faster than with 1; see Performance).", range=(1, 8)),
    ParamSpec("proposal_box_net_close_width", 240, "integer",
              "Proposals: objects close to the camera (a wrist camera before a grasp, a "
              "hand-held close-up): also run the box network at this narrower width on "
              "frames where it found a large box (or none), and take the large objects from "
              "that pass whole instead of in parts (held-out rendered close-ups, colour "
              "alone: 55 -> 65 of 78 objects, false boxes 2.4 -> 1.6 a frame; tables -2..+2 "
              "objects a group, fewer false boxes). Frames with depth take it only when their "
              "depth says the camera is close (the depth proposer's close_view_m, 0.5 m), "
              "their camera is in proposal_box_net_close_topics or fuse_close_pass is true "
              "(on tables, live with depth, it cost about 3 of 30 frames a second). 0: off "
              "(see Close objects).", range=(0, 1280)),
    ParamSpec("depth_proposal_config", "", "string",
              "YAML file of depth proposer settings (format of config/depth_proposals.yaml); "
              "empty: the defaults."),
    ParamSpec("crop_square", True, "bool",
              "The student sees a square window around each box (the crop shape it was "
              "distilled on), moved into the frame; a window that cannot be square (the full "
              "frame, a region of interest, a window larger than the frame) and is longer "
              "than 4:3 is padded to a square with its edge pixels instead of stretched; "
              "false: the box itself, stretched to the student's square input. The published "
              "bbox is the box either way."),
    ParamSpec("crop_context", 0.15, "double",
              "Margin of that window around the box, as a fraction of the box's longer side "
              "(crop_square) or of its own width and height.", range=(0.0, 1.0)),
    ParamSpec("min_box_size", 4, "integer",
              "Boxes narrower or shorter than this many pixels after clipping are dropped.",
              range=(1, 4096)),
    # -- scoring (dynamic) --------------------------------------------------------------------
    ParamSpec("unknown_threshold", -1.0, "double",
              "Open set: a crop whose best softmax score is below this is labelled 'unknown' "
              "(known: false). -1: the bundle's calibrated threshold (0.5 for a bundle without "
              "calibration); 0 disables. Allowed: -1 or 0..1.", range=(-1.0, 1.0)),
    ParamSpec("seen_bias", -1.0, "double",
              "Calibrated stacking: cosine subtracted from the similarity of every active name "
              "the student was trained on, so names it never saw are not crowded out. -1: the "
              "bundle's calibrated bias (0 for a bundle without calibration); 0 disables. "
              "Allowed: -1 or 0..1.", range=(-1.0, 1.0)),
    ParamSpec("min_similarity", -1.0, "double",
              "Open set: a crop whose best raw cosine similarity is below this is labelled "
              "'unknown' (useful with tiny vocabularies, where softmax scores are high "
              "anyway). -1 disables.", range=(-1.0, 1.0)),
    ParamSpec("top_k", 3, "integer", "Number of [label, score] pairs reported per object.",
              range=(1, 100)),
    ParamSpec("score_temperature", 0.0, "double",
              "Softmax temperature over cosine similarities (0.01 equals CLIP's logit scale "
              "100). 0: the bundle's calibrated temperature (0.01 for a bundle without "
              "calibration); otherwise at least 0.0001.", range=(0.0, 10.0)),
    ParamSpec("negative_names", True, "bool",
              "Open set: the names the student was trained on that are not in the active "
              "vocabulary (and not close to an active name) join the softmax as negatives, so "
              "a crop that looks like one of them scores low and becomes 'unknown'. Needs a "
              "bundle whose calibration record has negatives; scores then sum to at most 1."),
    # -- object tracks (dynamic) --------------------------------------------------------------
    ParamSpec("track_objects", True, "bool",
              "Follow each camera's objects from frame to frame (a box joins the track of the "
              "box it overlaps in the camera's last frames when the student sees them alike; "
              "crop_source proposals only, a fixed region or the whole frame is no object to "
              "follow) "
              "and name each object from its pooled views instead of one frame's; ~/labels "
              "gains track_id and ~/detections its id. Frames are taken in stamp order; a frame "
              "unlike the one before (another scene) ends the camera's tracks. See Object "
              "tracks."),
    ParamSpec("track_memory", 0.5, "double",
              "Weight of a track's earlier views against the newest (each older view weighs "
              "this much less again); 0: ids only, nothing pooled.", range=(0.0, 0.95)),
    ParamSpec("track_min_iou", 0.3, "double",
              "Least overlap (intersection over union) of a box with its track's last box, both "
              "doubled in size about their centres.",
              range=(0.05, 1.0)),
    ParamSpec("track_max_gap_s", 1.0, "double",
              "Longest time (s, by stamps) a track waits for its object to be seen again.",
              range=(0.0, 10.0)),
    # -- outputs (dynamic) --------------------------------------------------------------------
    ParamSpec("publish_annotated", False, "bool",
              "Publish ~/image_annotated (sensor_msgs/Image, rgb8) with boxes and labels; the "
              "topic is advertised only while this is true."),
)

#: Parameters that change the vocabulary.
VOCABULARY_PARAMS = frozenset({"labels", "descriptions", "vocabulary_file"})
#: Parameters that change :class:`~vl_distill_ros.perception.pipeline.PipelineSettings`.
SETTINGS_PARAMS = frozenset({"crop_source", "rois", "proposal_min_area_frac",
                             "proposal_max_area_frac", "proposal_max_count",
                             "proposal_pad_frac", "proposal_fallback_full_frame",
                             "proposal_source", "proposal_box_net", "proposal_box_net_depth",
                             "proposal_box_net_behind",
                             "proposal_box_net_threshold", "proposal_box_net_threads",
                             "proposal_box_net_close_width",
                             "depth_proposal_config", "min_box_size",
                             "crop_square", "crop_context",
                             "unknown_threshold", "seen_bias",
                             "min_similarity", "top_k", "score_temperature",
                             "negative_names", "track_objects", "track_memory",
                             "track_min_iou", "track_max_gap_s"})

BY_NAME: dict[str, ParamSpec] = {p.name: p for p in PARAMETERS}


def descriptor_for(spec: ParamSpec):
    """The :class:`rcl_interfaces.msg.ParameterDescriptor` of ``spec``."""
    from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                    ParameterType)

    desc = ParameterDescriptor(name=spec.name, type=getattr(ParameterType, TYPE_NAMES[spec.type]),
                               description=spec.description, read_only=spec.read_only,
                               additional_constraints=spec.constraints)
    if spec.range is not None:
        lo, hi = spec.range
        if spec.type == "integer":
            desc.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
        elif spec.type == "double":
            desc.floating_point_range = [FloatingPointRange(from_value=float(lo),
                                                            to_value=float(hi), step=0.0)]
    return desc


def _declare(node: "Node", spec: ParamSpec, value: Any, desc: Any) -> Any:
    """``node.declare_parameter``; a start-up value of another type than ``spec``'s (rclpy's
    InvalidParameterTypeException, a traceback) is a StartupError saying what to write."""
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

    from .startup_checks import StartupError

    try:
        return node.declare_parameter(spec.name, value, desc)
    except InvalidParameterValueException:   # out of the descriptor's range: a traceback
        given = getattr(node, "_parameter_overrides", {}).get(spec.name)
        shown = repr(given.value) if given is not None else "the value given"
        bounds = "[{:g}, {:g}]".format(*spec.range) if spec.range is not None else ""
        raise StartupError(f"{spec.name}: {shown} is outside its range {bounds}") from None
    except InvalidParameterTypeException:
        given = getattr(node, "_parameter_overrides", {}).get(spec.name)
        shown = (f"{given.value!r} (a {given.type_.name.lower()})" if given is not None
                 else "the value given")
        raise StartupError(f"{spec.name}: {shown} is not of its type {spec.type}; write "
                           f"{_TYPE_HINTS.get(spec.type, spec.type)}") from None


def _rclpy_type(spec: ParamSpec):
    from rclpy.parameter import Parameter

    return {"bool": Parameter.Type.BOOL, "integer": Parameter.Type.INTEGER,
            "double": Parameter.Type.DOUBLE, "string": Parameter.Type.STRING,
            "string_array": Parameter.Type.STRING_ARRAY,
            "integer_array": Parameter.Type.INTEGER_ARRAY}[spec.type]


#: String parameters that take ``off``, which YAML 1.1 (rcl's parameter files, ``-p x:=off``,
#: ``ros2 param set``) reads as the boolean false: false is taken as ``off``.
OFF_STRING_PARAMS = ("proposal_box_net", "proposal_box_net_depth", "proposal_box_net_behind")

#: What to write instead, by declared type, when a start-up value has another type.
_TYPE_HINTS = {"double": "a number with a decimal point (0.0, not 0)",
               "integer": "a whole number", "bool": "true or false",
               "string": "text (quote values YAML reads otherwise: 'off', '123')",
               "string_array": "a list in brackets: \"['a', 'b']\" (not a bare a,b)",
               "integer_array": "a list of whole numbers in brackets: \"[1, 2]\""}


def off_as_string(parameters: list) -> list:
    """``parameters`` with a boolean false for one of :data:`OFF_STRING_PARAMS` turned into
    the string ``off`` (what the user wrote before YAML read it)."""
    from rclpy.parameter import Parameter

    return [Parameter(p.name, Parameter.Type.STRING, "off")
            if p.name in OFF_STRING_PARAMS and p.type_ == Parameter.Type.BOOL and not p.value
            else p for p in parameters]


#: Start-up values rclpy itself takes (not :data:`PARAMETERS`), by name or by prefix.
ROS_OWN_PARAMS = ("use_sim_time", "start_type_description_service")
ROS_OWN_PREFIXES = ("qos_overrides.",)


def unknown_overrides_warning(overrides: Any) -> str:
    """The warning for start-up values (``--params-file``, ``-p``) of names that are no
    parameter of the node ("" when there are none): rclpy keeps them undeclared and says
    nothing, so a misspelt ``unknown_treshold: 0.3`` left the default in force. A warning,
    not a refusal: a params file's ``/**`` section may hold other nodes' settings."""
    from ..config import closest_names

    names = [n for n in (overrides or {}) if n not in BY_NAME and n not in ROS_OWN_PARAMS
             and not n.startswith(ROS_OWN_PREFIXES)]
    if not names:
        return ""
    hints = closest_names(sorted(names)[:20], list(BY_NAME))
    return (f"start-up value(s) of unknown parameter(s) ignored: {', '.join(hints)}"
            + (" ..." if len(names) > 20 else "") + " (README, Parameters)")


def declare_parameters(node: "Node") -> dict[str, Any]:
    """Declare every parameter of :data:`PARAMETERS` on ``node``; return ``{name: value}``.

    Empty-array defaults are declared by type (rclpy cannot infer a type from ``[]``, and an
    empty list in a YAML parameter file carries no type either) and then set to a typed
    empty array, so every parameter has a value of its declared type. Must run before any
    set-parameters callback is registered.
    """
    from rclpy.parameter import Parameter

    overrides = getattr(node, "_parameter_overrides", None)  # rclpy's start-up values
    if isinstance(overrides, dict):
        unknown = unknown_overrides_warning(overrides)
        if unknown:
            node.get_logger().warning(unknown)
        overrides.update({p.name: p for p in off_as_string(
            [overrides[n] for n in OFF_STRING_PARAMS if n in overrides])})
    values: dict[str, Any] = {}
    fixups = []
    lock_after: list[ParamSpec] = []
    for spec in PARAMETERS:
        desc = descriptor_for(spec)
        if isinstance(spec.default, list) and not spec.default:
            if spec.read_only:  # writable until its typed empty value is set, then locked
                desc.read_only = False
            param = _declare(node, spec, _rclpy_type(spec), desc)
            if spec.read_only:
                lock_after.append(spec)
            if param.type_ == Parameter.Type.NOT_SET:
                fixups.append(Parameter(spec.name, _rclpy_type(spec), []))
                values[spec.name] = []
                continue
        else:
            param = _declare(node, spec, spec.default, desc)
        values[spec.name] = param.value
    if fixups:
        # read-only ones were declared writable for this and are locked just below
        results = node.set_parameters(fixups)
        for p, r in zip(fixups, results):
            if not r.successful:  # pragma: no cover - nothing registered yet
                raise RuntimeError(f"could not initialise parameter {p.name}: {r.reason}")
    for spec in lock_after:
        node.set_descriptor(spec.name, descriptor_for(spec))
    for name, value in values.items():
        if isinstance(value, (list, tuple)) or type(value).__name__ == "array":
            values[name] = list(value)
    return values
