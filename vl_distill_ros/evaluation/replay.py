"""Replay a camera bag through ``vl_distill_node`` (live) or the same pipeline (offline).

Live mode (:func:`~.live_replay.run_live`, in :mod:`.live_replay`) does what ``ros2 bag
play`` plus a recorder would do, without either being installed:

1. the node is started as a subprocess (``python -m vl_distill_ros.ros.node``) in a private
   namespace (default ``/vl_replay_<pid>_<random>``) with the bundle, the vocabulary file
   and the pipeline parameters, its output going to ``node.log``; it runs in its own process
   group, so it is stopped (SIGINT, then SIGTERM / SIGKILL to the group) whatever happens,
   and on Linux it also receives SIGTERM should this process die;
2. a replay node in this process publishes each image message of the bag, as the stored CDR
   bytes (``Publisher.publish(bytes)``, exactly what ``ros2 bag play`` sends), on
   ``<namespace><topic>`` at ``t0 + (bag time - first bag time) / rate``; the node's
   ``image_topics`` are those namespaced topics, so other publishers of the bag's topic
   names in the same ROS domain cannot mix in;
3. it records ``<namespace>/vl_distill_node/labels`` (reliable QoS, deep queue) with the
   receive time, and the node's ``/diagnostics`` (its received / processed / dropped
   counters and its vocabulary state);
4. replay starts only once the node is up: its labels publisher is discovered, every image
   topic has its subscription matched and a first diagnostics message arrived; if that does
   not happen within ``node_timeout`` seconds, or the node exits, a :class:`NodeError`
   quotes the end of ``node.log``;
5. after the last frame it waits until every published frame is labelled, or no label has
   arrived for a quiet period (frames the node dropped under its latest-wins policy, or lost
   in best-effort transport, are never labelled), at most ``drain_timeout`` seconds.

End-to-end latency of a frame is the time from its publication by the replay node to the
arrival of its labels document (both measured here with one monotonic clock).

Offline mode (:func:`run_offline`) decodes the bag's images and runs
:class:`~vl_distill_ros.perception.pipeline.PerceptionPipeline` frame by frame, as fast as the CPU
allows, with the same bundle, the same vocabulary (embedded by the same
:class:`~vl_distill_ros.model.text_service.TextEmbeddingService`) and the same settings
(built from the same parameter values as the node's, see :func:`pipeline_settings`), and
makes the same documents with :func:`~vl_distill_ros.perception.pipeline.labels_document`. The
two modes therefore give the same labels for the frames both labelled.

The settings, the recording and the checks both modes share are in :mod:`.replay_settings`
(all re-exported here).

Errors: :class:`InputError` (exit code 2: missing or corrupt bag, no image topics, bad
sidecar, bad model or vocabulary file, bad parameter) and :class:`NodeError` (exit code 3:
the node never answered, or exited).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..bags.bag_io import BagContents, BagError, UndecodableImage
from ..ros.node_process import NODE_NAME
from .live_replay import (DiagnosticsLog, LivePlan, PacedRun, ReplayNode, collect_documents,
                          drain, node_counters, plan_live, publish_paced, run_live,
                          start_node, wait_for_node)
from .replay_settings import (TUNABLE_PARAMS, InputError, NodeError, Recording, ReplayError,
                              ReplaySettings, check_model, default_model_path, image_count,
                              load_vocabulary_file, node_parameter_values, open_bag,
                              parse_param, pipeline_settings, progress_bar, reported_settings,
                              resolve_device, stamp_from_cdr, with_bag_close_topics)

__all__ = ["ReplayError", "InputError", "NodeError", "ReplaySettings", "Recording",
           "TUNABLE_PARAMS", "NODE_NAME", "default_model_path", "parse_param",
           "node_parameter_values", "pipeline_settings", "open_bag", "run_live",
           "run_offline", "offline_pipeline", "check_model", "stamp_from_cdr",
           "resolve_device", "LivePlan", "plan_live",
           "DiagnosticsLog", "ReplayNode", "start_node", "wait_for_node", "PacedRun",
           "publish_paced", "drain", "collect_documents", "node_counters"]


# -------------------------------------------------------------------------------------------
# offline
# -------------------------------------------------------------------------------------------
def _offline_frames(contents: BagContents, settings: ReplaySettings, values: Mapping[str, Any],
                    rec: Recording):
    """The bag's colour frames: RGB-D frames (depth paired by stamp within the node's
    ``depth_sync_tolerance``) when the bag has depth and ``settings.depth``, else images.
    An image that cannot be decoded is skipped, as the node drops it: counted in
    ``rec.undecodable`` and input to ``rec.frames`` (unlabelled: its ground truth counts
    as missed, as live)."""
    def skip(exc: UndecodableImage) -> None:
        key = (exc.topic, int(exc.stamp_ns))
        rec.undecodable.add(key, str(exc))
        rec.frames.append(key)

    if settings.depth and contents.depth_topics:
        tol = int(round(float(values["depth_sync_tolerance"]) * 1e9))
        return contents.rgbd_frames(tolerance_ns=tol, depth_unit_m=float(values["depth_scale"]),
                                    defer_alignment=True,   # aligned as the node does
                                    on_undecodable=skip)
    return contents.images(on_undecodable=skip)


def _frame_depth(frame: Any) -> tuple[Any, Any]:
    """``(depth, intrinsics)`` for :meth:`PerceptionPipeline.process` from an RGB-D frame;
    a CameraInfo with unusable values gives no intrinsics (the pipeline notes it)."""
    from ..perception.camera_model import DepthError

    depth = getattr(frame, "depth", None)
    if depth is None or frame.camera_info is None:
        return None, None
    try:
        return depth, frame.intrinsics()
    except DepthError:
        return depth, None


def offline_pipeline(model: Path, settings: ReplaySettings, values: Mapping[str, Any],
                     device: str):
    """The :class:`PerceptionPipeline` of an offline replay, its vocabulary and where the
    vocabulary came from (the node's rules; every problem is an :class:`InputError`)."""
    import torch

    from ..model.bundle import BundleError, load_bundle
    from ..model.runtime import RuntimeBackendError
    from ..model.text_service import TextEmbeddingService, alike_warning, cut_warning
    from ..perception.pipeline import PerceptionPipeline, PipelineError

    vocab_file = load_vocabulary_file(settings.vocabulary)
    pipe_settings = pipeline_settings(values)
    if int(values["torch_threads"]) > 0:
        torch.set_num_threads(int(values["torch_threads"]))
    try:
        bundle = load_bundle(model, device=device)
    except BundleError as exc:
        raise InputError(f"cannot load model bundle: {exc}") from None
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"cannot load model bundle {model} on device {device!r}: "
                         f"{exc}") from None
    if vocab_file is not None:
        cache = os.path.expanduser(settings.text_cache_dir) if settings.text_cache_dir else None
        service = TextEmbeddingService.from_bundle(
            bundle, cache_dir=cache, catalogue=bool(values["description_catalogue"]))
        try:
            emb = service.embed_vocabulary(vocab_file)
        except Exception as exc:  # noqa: BLE001 - e.g. teacher weights missing offline
            raise InputError(f"could not embed the vocabulary {settings.vocabulary}: "
                             f"{exc}") from None
        vocab, source, catalogue = vocab_file, f"file {settings.vocabulary}", service.catalogue
        alike = service.prompted_alike(vocab.labels, emb)
        if alike:   # as the node warns
            print(f"warning: {alike_warning(alike)}", file=sys.stderr)
        cut = service.cut_labels(vocab.labels)
        if cut:
            print(f"warning: {cut_warning(cut)}", file=sys.stderr)
    else:
        vocab, emb, source = bundle.vocabulary, bundle.text_embeddings, "bundle"
        catalogue = None
    try:
        pipe = PerceptionPipeline(bundle, vocabulary=vocab, embeddings=emb,
                                  inference_backend=str(values["inference_backend"]),
                                  inference_threads=int(values["inference_threads"]),
                                  proposal_threads=int(values["proposal_threads"]),
                                  catalogue=catalogue, **pipe_settings.as_kwargs())
    except (PipelineError, RuntimeBackendError) as exc:
        raise InputError(f"cannot build the pipeline: {exc}") from None
    return pipe, vocab, source


def _float_depth(contents: BagContents, colour_topic: str) -> bool | None:
    """Whether the first message of ``colour_topic``'s depth topic is 32FC1 (True), 16-bit
    (False) or neither or unreadable (None), for the unit warning's advice."""
    from ..bags.bag_io import first_encodings
    from ..perception.depth_units import float_encoding

    topic = contents.depth_topics[colour_topic]
    return float_encoding(first_encodings(contents.path, [topic]).get(topic, ""))


def run_offline(contents: BagContents, settings: ReplaySettings) -> Recording:
    """Run the pipeline on every image of the bag (see the module docstring).

    Raises:
        InputError: bad model, vocabulary, settings or an undecodable image.
    """
    from ..perception.depth_units import unit_warning
    from ..perception.pipeline import PipelineError, labels_document

    model = check_model(settings.model)
    values = with_bag_close_topics(node_parameter_values(settings.params),
                                   contents.image_topics)
    device = resolve_device(settings.device)
    pipe, vocab, source = offline_pipeline(model, settings, values, device)
    rec = Recording(mode="offline", settings=reported_settings(values),
                    vocabulary={"source": source, "names": vocab.names},
                    node={"model_path": str(model), "device": device})
    bar = progress_bar(image_count(contents), settings.progress, "offline")
    t_start = time.monotonic()
    depth_counts: dict[str, int] = {}
    try:
        for img in _offline_frames(contents, settings, values, rec):
            key = (img.topic, int(img.stamp_ns))
            t0 = time.perf_counter()
            objects, version = pipe.process(img.image, *_frame_depth(img), camera=img.topic,
                                            stamp=int(img.stamp_ns) * 1e-9)
            dt = time.perf_counter() - t0
            if getattr(img, "depth_note", None) is not None and \
                    img.topic in contents.depth_topics:
                status = pipe.last_depth_status if img.depth is not None else img.depth_note
                depth_counts[status] = depth_counts.get(status, 0) + 1
            sec, nanosec = divmod(int(img.stamp_ns), 1_000_000_000)
            # the JSON round trip makes the document exactly what a subscriber would decode
            doc = json.loads(json.dumps(labels_document(sec, nanosec, img.frame_id, img.topic,
                                                        version, objects)))
            rec.frames.append(key)
            rec.published += 1
            now = time.monotonic() - t_start
            rec.rows.append({"frame": [key[0], key[1]], "received_s": now,
                             "published_s": now - dt, "latency_s": dt, "doc": doc})
            if key in rec.labels:
                rec.duplicates += 1
            else:
                rec.labels[key] = doc
                rec.latencies_s[key] = dt
            bar.update(1)
    except BagError as exc:
        raise InputError(str(exc)) from None
    except PipelineError as exc:
        raise InputError(f"an image of the bag cannot be processed: {exc}") from None
    finally:
        bar.close()
        pipe.close()
    rec.undecodable.refuse_if_all(rec.frames, settings)
    if depth_counts:
        rec.node["depth"] = {"topics": dict(contents.depth_topics),
                             "frames_by_status": depth_counts,
                             # the registration check's shift at the end, per colour topic
                             "registration_shift_px": {
                                 topic: list(pipe.depth_shift(topic))
                                 for topic in contents.depth_topics}}
        unit = float(values["depth_scale"])
        units = {topic: unit_warning(v, unit, _float_depth(contents, topic))
                 for topic in sorted(contents.depth_topics)
                 if (v := pipe.depth_unit_verdict(topic, min_frames=1)) is not None}
        if units:   # README: depth in the wrong unit
            rec.node["depth"]["unit_warnings"] = units
    rec.duration_s = time.monotonic() - t_start
    return rec


# -------------------------------------------------------------------------------------------
# the whole evaluation
# -------------------------------------------------------------------------------------------
def writable_folder(out_dir: str | Path) -> Path:
    """``out_dir``, made if missing, once a file can be made in it: an existing folder may
    still refuse files (a read-only mount, permissions), found now rather than after the
    whole replay when the report is written.

    Raises:
        InputError: ``out_dir`` is a file, below a file, or cannot take files.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as exc:
        raise InputError(f"--out {out_dir} cannot be a folder this replay writes into: "
                         f"{exc}") from None
    return out


@contextlib.contextmanager
def claimed_folder(out: Path):
    """Hold an exclusive advisory lock on the folder ``out`` while a replay writes into it
    (``node.log``, ``labels.jsonl``, the report and plots): a second ``replay-eval`` given the
    same ``--out`` (or the same default ``runs/replay/<bag name>``) stops at once instead of
    truncating the first one's ``node.log`` and overwriting its report with its own. No lock
    file is made: the lock goes with the process, also when it is killed.

    Raises:
        InputError: another process holds the folder.
    """
    try:
        fd = os.open(out, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        # a folder this user may write into but not read (mode 0733: writable_folder took
        # it): no lock to hold, go on as before
        yield out
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"--out {out} is in use by another replay-eval run; give each "
                             "run its own --out") from None
        except OSError:
            pass      # a file system without flock: go on as before
        yield out
    finally:
        os.close(fd)  # releases the lock


def evaluate_bag(bag: str | Path, settings: ReplaySettings, out_dir: str | Path, *,
                 offline: bool = False, sidecar: str | Path | None = None,
                 split: Any | None = None, split_path: str = "",
                 reference_vocabularies: Sequence[Any] = (), iou_threshold: float = 0.5,
                 plots: bool = True) -> dict[str, Any]:
    """Read the bag, replay it (live or offline), score the labels and write the report.

    Args:
        bag: rosbag2 bag folder (or a single ``.mcap`` / ``.db3`` file).
        settings: model, vocabulary, parameters and replay options.
        out_dir: where ``report.json``, ``report.md``, ``labels.jsonl``, ``node.log`` (live)
            and the plots go.
        offline: run the pipeline directly instead of the node.
        sidecar: JSON Lines ground truth instead of the bag's ``/ground_truth`` topic.
        split: :class:`~vl_distill_ros.model.vocabulary.Split` for the ID / OOD groups.
        split_path: where the split came from (reported).
        reference_vocabularies: vocabularies that map split keys to label names (besides the
            evaluated vocabulary and the bundle's own).
        iou_threshold: minimum IoU of a prediction-to-ground-truth match.
        plots: write the PNG plots.

    Returns:
        The report (also written to ``out_dir/report.json``).

    Raises:
        InputError, NodeError: see the module docstring.
    """
    if not 0.0 < float(iou_threshold) <= 1.0:
        raise InputError(f"--iou must be in (0, 1], got {iou_threshold}")
    contents = open_bag(bag, sidecar, settings.depth_topics, settings.camera_info_topics,
                        settings.depth_camera_info_topics, settings.image_topics)
    if settings.depth:
        for colour, plan in sorted(contents.depth_alignment.items()):
            if plan.pose is None:
                print(f"warning: {colour}: {plan.note}", file=sys.stderr)
    if image_count(contents) == 0 and not offline:   # offline counts what it reads
        raise InputError(f"{contents.path} has image topics {contents.image_topics} but no "
                         "image messages")
    out = writable_folder(out_dir)
    with claimed_folder(out):
        return _evaluate_into(out, contents, settings, offline, split, split_path,
                              reference_vocabularies, iou_threshold, plots)


def _evaluate_into(out: Path, contents: BagContents, settings: ReplaySettings, offline: bool,
                   split: Any | None, split_path: str, reference_vocabularies: Sequence[Any],
                   iou_threshold: float, plots: bool) -> dict[str, Any]:
    """:func:`evaluate_bag` once ``out`` is claimed: replay, score, write the report."""
    from ..model.vocabulary import Vocabulary
    from .report import build_report, write_report
    from .scoring import Membership, score_frames

    if settings.log_dir is None:
        settings.log_dir = out
    rec = run_offline(contents, settings) if offline else run_live(contents, settings)
    if rec.published == 0:
        raise InputError(f"{contents.path}: no image message of {contents.image_topics} could "
                         f"be read (its metadata.yaml lists {image_count(contents)}; a "
                         "metadata.yaml that disagrees with the storage files, e.g. in its "
                         "QoS profiles, hides their messages: `ros2 bag reindex` rewrites it)")

    vocabularies: list[Any] = []
    names = rec.vocabulary.get("names") or []
    if settings.vocabulary is not None:
        vocabularies.append(load_vocabulary_file(settings.vocabulary))
    model = check_model(settings.model)
    try:
        from ..model.bundle import read_manifest

        vocabularies.append(Vocabulary.from_dict(read_manifest(model)["vocabulary"]))
    except Exception:  # noqa: BLE001 - only used to map keys to names
        pass
    vocabularies += [v for v in reference_vocabularies if v is not None]
    membership = Membership.from_split(split, vocabularies)
    gt = {k: list(v) for k, v in contents.ground_truth.items()}
    # the active vocabulary's keys: ground truth labelled by key (011_banana) or by another
    # name of that key is scored under the vocabulary's name for it (a vocabulary in
    # another language keeps the YCB keys)
    keys = next(([lb.key for lb in v] for v in vocabularies if v.names == names), None)
    scores = score_frames(rec.frames, gt, rec.labels, membership, iou_threshold,
                          latencies_s=rec.latencies_s, vocabulary_names=names or None,
                          vocabulary_keys=keys, ambiguous=contents.ground_truth_repeated)
    report = build_report(contents, rec, scores, rate=settings.rate if not offline else None,
                          split_name=membership.split_name, split_path=split_path,
                          model=str(model))
    lat_ms = [rec.latencies_s[k] * 1e3 for k in rec.frames if k in rec.latencies_s]
    write_report(out, report, rec.rows, lat_ms, plots=plots)
    return report
