"""``vl-distill replay-eval``: replay a camera bag through the node and score its labels.

Live (default): starts ``vl_distill_node`` with the bundle and vocabulary, publishes the bag's
images with the recorded timing scaled by ``--rate`` (what ``ros2 bag play`` does), records
``~/labels`` and scores them against the bag's ground truth. ``--offline`` runs the same
pipeline on the bag's images without ROS, as fast as the CPU allows. See
:mod:`vl_distill_ros.evaluation.replay` for the details and ``launch/replay_eval.launch.py``
for the equivalent on a ROS 2 install.

Exit codes: 0 evaluation completed; 2 bad input (missing or corrupt bag, no image topics,
unreadable ground truth, model, vocabulary, split or parameter); 3 the node never answered
or exited (its last output lines are shown); 130 interrupted (Ctrl-C); 143 terminated
(SIGTERM: ``timeout``, ``kill``). The node is stopped in every case.
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
from pathlib import Path

from ..package_files import find_config

PROG = "vl-distill replay-eval"
DEFAULT_SPLIT = "config/splits/ycb_paper.yaml"
DEFAULT_REFERENCE_VOCABULARY = "config/ycb_vocabulary.yaml"
#: The package's Fast DDS profile: images through shared memory on one host.
SHM_PROFILE = "config/fastdds_shm_localhost.xml"
#: The variables through which Fast DDS reads a profile (its 2.x name and its 3.x name).
PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")


def transport_warning(environ: "os._Environ[str] | dict[str, str]") -> str | None:
    """What to say after a live replay that lost frames in transport when they went to the
    node over loopback UDP (Fast DDS, the default middleware, without a profile), where
    large frames can be lost; None when a profile or another middleware is set."""
    rmw = environ.get("RMW_IMPLEMENTATION", "") or "rmw_fastrtps_cpp"
    if not rmw.startswith("rmw_fastrtps") or any(environ.get(v) for v in PROFILE_VARIABLES):
        return None
    profile = find_config(SHM_PROFILE)
    where = str(profile) if profile is not None else "<share>/vl_distill_ros/" + SHM_PROFILE
    return (f"{PROFILE_VARIABLES[0]} is not set, so the frames reach the node over loopback "
            "UDP, where large ones can be lost; "
            f"export {PROFILE_VARIABLES[0]}={where} to send them through shared memory "
            "(README: Large frames and shared memory)")


def scoring_warnings(report: dict) -> list[str]:
    """What to say when some of the bag's depth, frames or ground truth went unused."""
    frames, out = report["frames"], []
    if frames.get("in_bag_metadata") is not None:
        out.append(f"the bag's metadata.yaml lists {frames['in_bag_metadata']} image "
                   f"message(s), {frames['in_bag']} were read: frames.in_bag counts what was "
                   "read (`ros2 bag reindex` rewrites a stale metadata.yaml)")
    for topic, skipped in (frames.get("undecodable_by_topic") or {}).items():
        none = not skipped.get("decoded")
        total = skipped["images"] + skipped.get("decoded", 0)
        out.append((f"none of the {total} image(s) on {topic} could be decoded" if none else
                    f"{skipped['images']} of the {total} image(s) on {topic} could not be "
                    "decoded") + " and were skipped (their frames count as unlabelled, as the "
                   f"node drops them): {skipped['first_error']}"
                   + ("; if that topic is no colour camera (infrared, a confidence map), "
                      "name the cameras with --image-topic" if none else ""))
    for topic in report["bag"].get("unpaired_depth_topics") or []:
        out.append(f"depth topic {topic} was paired with no colour topic (its camera "
                   "namespace holds none, or several), so its frames were not used: pair it "
                   f"with --depth-topic COLOUR={topic} (and --camera-info-topic)")
    for topic in report["bag"].get("depth_encoded_image_topics") or []:
        out.append(f"image topic {topic} carries depth (16UC1 or 32FC1) but no segment of its "
                   "name says depth, so it was replayed as one more camera and its depth "
                   "labelled as grey images: pair it with its colour camera with "
                   f"--depth-topic COLOUR={topic} (and --camera-info-topic), or name the "
                   "cameras with --image-topic")
    for topic, text in sorted(((report.get("node") or {}).get("depth") or {}).get(
            "unit_warnings", {}).items()):
        out.append(f"{topic}: {text}" + (" (replay-eval takes it as -p depth_scale:=...)"
                                         if "needs depth_scale" in text else ""))
    if frames.get("left_out_repeated_stamps"):
        out.append(f"{frames['left_out_repeated_stamps']} frame(s) left out of the scores: "
                   "another frame of their camera has the same header stamp, or several "
                   "ground-truth documents name it (labels and ground truth are matched by "
                   "camera and stamp; give each frame its own stamp)")
    if frames.get("ground_truth_without_frame"):
        examples = ", ".join(f"{camera} at {stamp} ns" for camera, stamp in
                             frames.get("ground_truth_without_frame_examples") or [])
        out.append(f"{frames['ground_truth_without_frame']} ground-truth document(s) name no "
                   f"frame of the bag (e.g. {examples}): their 'camera' must be one of the "
                   f"image topics {report['bag']['image_topics']} and their stamp an image's "
                   "header stamp")
    return out


def _add_depth_options(p: argparse.ArgumentParser) -> None:
    """The options that choose the colour topics and pair them with their depth and
    CameraInfo topics."""
    p.add_argument("--image-topic", action="append", default=[], metavar="TOPIC",
                   help="a colour image topic to replay (sensor_msgs/Image or "
                        "CompressedImage); repeatable. Default: every image topic that is "
                        "not depth by name, so a bag with other image topics (infrared, a "
                        "confidence map) names its colour cameras here")
    p.add_argument("--depth-topic", action="append", default=[], metavar="COLOUR=DEPTH",
                   help="pair a colour image topic with its registered depth topic (16UC1 mm "
                        "or 32FC1 m), overriding the convention: an image topic with a "
                        "'*depth*' segment belongs to the colour topic of the same camera "
                        "namespace (/camera/depth/image_raw -> /camera/image_raw or "
                        "/camera/color/image_raw); repeatable. Depth topics are never "
                        "evaluated as cameras")
    p.add_argument("--camera-info-topic", action="append", default=[],
                   metavar="COLOUR=CAMERA_INFO",
                   help="pair a colour image topic with its sensor_msgs/CameraInfo topic "
                        "(convention: /camera/camera_info or /camera/color/camera_info); "
                        "repeatable")
    p.add_argument("--depth-camera-info-topic", action="append", default=[],
                   metavar="COLOUR=DEPTH_CAMERA_INFO",
                   help="the colour topic's depth is not registered to it: align it with the "
                        "depth camera's CameraInfo topic and the bag's /tf_static (convention: "
                        "the camera_info topic beside a depth topic whose name does not say "
                        "aligned or registered, e.g. /camera/camera/depth/camera_info, used "
                        "when the depth and colour frame ids differ); repeatable")


def add_student_options(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--text-cache-dir``: where the student runs and where label text
    embeddings are cached (``replay-eval`` and ``label``)."""
    p.add_argument("--device", default="auto",
                   help="torch device of the student: auto, cpu, cuda, cuda:N "
                        "(default: %(default)s)")
    p.add_argument("--text-cache-dir", default=None, metavar="DIR",
                   help="label text-embedding cache (default: the node's, "
                        "~/.cache/vl_distill_ros/text_embeddings; '' disables it)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``replay-eval`` subcommand to ``sub`` (sets ``func=run``)."""
    p = sub.add_parser(
        "replay-eval", help="replay a camera bag through the node and score its labels",
        description="Start vl_distill_node with the given bundle and vocabulary, publish the "
                    "bag's camera images into the ROS graph with the recorded timing scaled "
                    "by --rate (like 'ros2 bag play'), record the node's ~/labels, match them "
                    "to the bag's ground truth by IoU and score them: accuracy on ID and OOD "
                    "objects, per-object precision/recall/F1, unknown rate, confusion matrix, "
                    "missed objects, end-to-end latency p50/p95, processed vs dropped frames. "
                    "Writes report.json, report.md, labels.jsonl and PNG plots. --offline "
                    "runs the same pipeline on the bag without ROS. Exit codes: 0 done, 2 bad "
                    "input, 3 the node never answered or exited.")
    p.add_argument("bag", metavar="BAG",
                   help="rosbag2 bag folder (MCAP or sqlite3; e.g. from 'vl-distill make-bag')")
    p.add_argument("--rate", type=float, default=1.0,
                   help="replay speed factor, as 'ros2 bag play --rate' (default: %(default)s)")
    p.add_argument("--model", default=None, metavar="BUNDLE",
                   help="student bundle (.vdb) (default: the packaged default bundle)")
    p.add_argument("--vocabulary", default=None, metavar="FILE",
                   help="vocabulary YAML for the node (format of config/ycb_vocabulary.yaml; "
                        "default: the bundle's own vocabulary)")
    p.add_argument("--split", default=None, metavar="FILE",
                   help=f"ID/OOD split YAML (default: {DEFAULT_SPLIT}); 'none' groups "
                        "nothing")
    p.add_argument("--reference-vocabulary", default=None, metavar="FILE",
                   help="vocabulary YAML that maps the split's keys to label names "
                        f"(default: {DEFAULT_REFERENCE_VOCABULARY})")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default: runs/replay/<bag name>[_offline])")
    p.add_argument("--offline", action="store_true",
                   help="run the pipeline directly on the bag's images, without ROS, as fast "
                        "as possible")
    p.add_argument("--crop-source", choices=("proposals", "full_frame", "rois"), default=None,
                   help="the node's crop_source parameter (default: the node's, proposals)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="another node parameter (pipeline settings, qos_reliability, "
                        "qos_depth, torch_threads, depth_scale, depth_sync_tolerance), e.g. "
                        "-p unknown_threshold:=0.3 or -p depth_scale:=0.0001 for a bag's "
                        "16-bit depth in tenths of a millimetre; repeatable")
    p.add_argument("--iou", type=float, default=0.5,
                   help="IoU needed to match a box to a ground-truth object "
                        "(default: %(default)s)")
    p.add_argument("--sidecar", default=None, metavar="JSONL",
                   help="ground truth from this JSON Lines file instead of the bag's "
                        "/ground_truth topic")
    add_student_options(p)
    p.add_argument("--node-timeout", type=float, default=60.0, metavar="S",
                   help="seconds the node may take to come up (default: %(default)s)")
    p.add_argument("--drain-timeout", type=float, default=30.0, metavar="S",
                   help="seconds to wait for labels after the last frame "
                        "(default: %(default)s)")
    p.add_argument("--namespace", default=None,
                   help="namespace of the node and the replayed topics (default: a unique "
                        "/vl_replay_<pid>_<hex>, so nothing else in the ROS domain mixes in)")
    p.add_argument("--node-command", default=None, metavar="CMD",
                   help="command that starts the node ('--ros-args ...' is appended; default: "
                        "'<this python> -m vl_distill_ros.ros.node')")
    _add_depth_options(p)
    p.add_argument("--no-depth", action="store_true",
                   help="ignore the bag's depth: colour-only proposals")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def _error(msg: str) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr)


def topic_pairs(items: list[str], option: str) -> dict[str, str]:
    """``COLOUR=OTHER`` strings -> ``{colour topic: other topic}``.

    Raises:
        InputError: an item without ``=`` or with an empty side.
    """
    from ..evaluation.replay import InputError

    out = {}
    for item in items:
        colour, sep, other = (t.strip() for t in item.partition("="))
        if not sep or not colour or not other:
            raise InputError(f"{option} expects COLOUR_TOPIC=TOPIC, got {item!r}")
        out[colour] = other
    return out


def _print_warnings(report: dict) -> None:
    """After the summary: what went unused or was lost, on stderr."""
    if not report["bag"]["ground_truth_frames"]:
        print(f"{PROG}: warning: the bag has no ground truth (no /ground_truth topic and no "
              "--sidecar): only frames and latency are reported", file=sys.stderr)
    for warning in scoring_warnings(report):
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    warning = transport_warning(os.environ)
    lost = report["frames"].get("lost_in_transport")
    if lost:  # counted as the node's subscription saw them: its qos_depth queue is part of it
        print(f"{PROG}: warning: {lost} frame(s) never reached the node's callback: lost in "
              "transport or overwritten in its subscription queue (qos_depth "
              f"{report['settings'].get('qos_depth', '?')}: raise it with -p qos_depth:=N, or "
              "lower --rate)" + (f"; {warning}" if warning else ""), file=sys.stderr)
    behind = report["frames"].get("node_processed_behind")
    if behind:   # the node's cheaper settings while behind: not what --offline runs
        print(f"{PROG}: warning: {behind} frame(s) were processed while the node was behind "
              f"its cameras ({report['frames'].get('node_processed_behind_student') or 0} of "
              "them with the student of inference_backend_behind), with the cheaper settings "
              "of proposal_box_net_behind / inference_backend_behind: their labels may differ "
              "from --offline's; lower --rate, or give -p proposal_box_net_behind:=same -p "
              "inference_backend_behind:=same", file=sys.stderr)
    side = {kind: report["frames"].get(f"{kind}_lost_in_transport")
            for kind in ("depth", "camera_info")}
    if any(side.values()):
        print(f"{PROG}: warning: {side['depth'] or 0} depth image(s) and "
              f"{side['camera_info'] or 0} CameraInfo message(s) never reached the node: "
              "their frames were labelled colour only, unlike --offline"
              + (f" ({warning})" if warning else ""),
              file=sys.stderr)
    depth = (report.get("node") or {}).get("depth_input", "")
    if depth.startswith("not used"):
        print(f"{PROG}: warning: the bag's depth was {depth}", file=sys.stderr)


def _node_command(text: str | None) -> list[str] | None:
    """``--node-command`` split as a shell would (None when not given).

    Raises:
        InputError: unbalanced quotes.
    """
    from ..evaluation.replay import InputError

    if not text:
        return None
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise InputError(f"--node-command {text!r}: {exc}") from None


#: Node parameters of the ROS transport: with --offline (no ROS) they change nothing.
TRANSPORT_PARAMS = ("qos_reliability", "qos_depth", "publish_annotated")


def _warn_transport_params(params: dict) -> None:
    """Warn of ``params`` that only the live replay's ROS transport uses."""
    given = [name for name in TRANSPORT_PARAMS if name in params]
    if given:
        print(f"{PROG}: warning: -p {', '.join(given)}: no effect with --offline (the bag's "
              "images are read directly, with no ROS subscription or publisher)",
              file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run the evaluation; returns the exit code (0, 2, 3, 130 or 143)."""
    from ..model.vocabulary import Split, Vocabulary, VocabularyError
    from ..evaluation.replay import (InputError, ReplayError, ReplaySettings, evaluate_bag,
                                     parse_param)
    from ..evaluation.report import summary_table

    if not args.offline and not os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE"):
        print(f"{PROG}: warning: ROS_AUTOMATIC_DISCOVERY_RANGE is not set, so DDS discovery "
              "may reach other machines; export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST to keep "
              "the replay on this machine (and set ROS_DOMAIN_ID to keep it apart from other "
              "runs)", file=sys.stderr)
    try:
        if not math.isfinite(args.rate) or args.rate <= 0:
            raise InputError(f"--rate must be a finite number > 0, got {args.rate}")
        params = dict(parse_param(text) for text in args.param)
        if args.offline:
            _warn_transport_params(params)
        if args.crop_source:
            params["crop_source"] = args.crop_source
        for name, value in (("--node-timeout", args.node_timeout),
                            ("--drain-timeout", args.drain_timeout)):
            if not math.isfinite(value) or value <= 0:
                raise InputError(f"{name} must be a finite number > 0, got {value}")
        bag = Path(args.bag).expanduser()
        out = Path(args.out) if args.out else Path("runs") / "replay" / (
            (bag.name or "bag") + ("_offline" if args.offline else ""))

        split, split_path = None, ""
        if args.split != "none":
            path = Path(args.split) if args.split else find_config(DEFAULT_SPLIT)
            if path is None:
                print(f"{PROG}: warning: {DEFAULT_SPLIT} not found; objects are not grouped "
                      "into ID/OOD (pass --split)", file=sys.stderr)
            else:
                split, split_path = Split.load(path), str(path)
        ref_path = (Path(args.reference_vocabulary) if args.reference_vocabulary
                    else find_config(DEFAULT_REFERENCE_VOCABULARY))
        references = [Vocabulary.load(ref_path)] if ref_path is not None else []

        settings = ReplaySettings(
            model=Path(args.model).expanduser() if args.model else None,
            vocabulary=Path(args.vocabulary).expanduser() if args.vocabulary else None,
            params=params, device=args.device, rate=args.rate,
            node_timeout=args.node_timeout, drain_timeout=args.drain_timeout,
            namespace=args.namespace,
            node_command=_node_command(args.node_command),
            progress=not args.no_progress, depth=not args.no_depth,
            depth_topics=topic_pairs(args.depth_topic, "--depth-topic"),
            camera_info_topics=topic_pairs(args.camera_info_topic, "--camera-info-topic"),
            depth_camera_info_topics=topic_pairs(args.depth_camera_info_topic,
                                                 "--depth-camera-info-topic"),
            image_topics=list(dict.fromkeys(args.image_topic)))
        if args.text_cache_dir is not None:
            settings.text_cache_dir = args.text_cache_dir
        report = evaluate_bag(bag, settings, out, offline=args.offline, sidecar=args.sidecar,
                              split=split, split_path=split_path,
                              reference_vocabularies=references, iou_threshold=args.iou,
                              plots=not args.no_plots)
    except VocabularyError as exc:
        _error(str(exc))
        return 2
    except ReplayError as exc:
        _error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt as exc:   # Ctrl-C, or SIGTERM (cli.Terminated)
        # by name: under `python -m vl_distill_ros.cli` the class is __main__'s, and the
        # commands do not import the cli that imports them
        terminated = type(exc).__name__ == "Terminated"
        _error("terminated" if terminated else "interrupted")
        return 143 if terminated else 130
    print(summary_table(report))
    _print_warnings(report)
    print(f"report: {report['files']['report_json']}")
    return 0
