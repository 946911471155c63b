"""``vl-distill label``: name the objects in image files, as the node would, without ROS.

A robotics engineer's first question is whether the student names *their* objects. This
command runs the node's pipeline (the same bundle, vocabulary rules, parameters and scoring
as ``vl-distill replay-eval --offline``) on PNG or JPEG files and prints, for each image, the
JSON document the node publishes on ``~/labels`` (one per line; ``camera`` is the file's
path). ``--out DIR`` also writes ``labels.jsonl`` and each image with its boxes drawn.
With ``--depth`` (one registered 16-bit depth PNG per image, in ``--depth-scale`` units) and
``--intrinsics`` the depth proposer runs as on an RGB-D camera's frames. A file that cannot
be read or decoded is reported on stderr with its reason and the others are still labelled
(exit status 2 then); an image whose depth file is bad is labelled colour only.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from .replay_eval import add_student_options

PROG = "vl-distill label"
#: Largest image file read (bytes) and decoded (pixels): bounds on one file's memory.
MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_PIXELS = 50_000_000
#: Most image files one call takes.
MAX_IMAGES = 100_000
#: Metres per unit of a 16-bit depth PNG that --depth-scale accepts: the node's
#: ``depth_scale`` range (vl_distill_ros.ros.params; kept equal by a test).
DEPTH_SCALE_RANGE = (1e-6, 0.1)
#: Node parameters ``-p`` does not take here, and what to use instead (they were accepted
#: and silently ignored).
NOT_PARAMETERS_HERE = {
    "depth_scale": "the depth files' units are given with --depth-scale METRES here",
    "depth_sync_tolerance": "each image is paired with its own --depth file here (no "
                            "stamps to match)",
    "qos_reliability": "files are read here, not subscribed to (QoS is the node's)",
    "qos_depth": "files are read here, not subscribed to (QoS is the node's)",
    "publish_annotated": "--out DIR draws the boxes and labels here",
}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``label`` subcommand to ``sub`` (sets ``func=run``)."""
    p = sub.add_parser(
        "label", help="name the objects in image files as the node would (no ROS needed)",
        description="Run the node's pipeline (proposals, the student, the vocabulary and its "
                    "calibration) on PNG or JPEG files and print each image's ~/labels JSON "
                    "document, one per line. Exit codes: 0 done, 2 bad input (the other "
                    "images are still labelled).")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="PNG or JPEG files")
    p.add_argument("--model", default=None, metavar="BUNDLE",
                   help="student bundle (.vdb) (default: the packaged default bundle)")
    p.add_argument("--vocabulary", default=None, metavar="FILE",
                   help="vocabulary YAML (format of config/ycb_vocabulary.yaml; default: the "
                        "bundle's own vocabulary)")
    p.add_argument("--crop-source", choices=("proposals", "full_frame", "rois"), default=None,
                   help="the node's crop_source parameter (default: the node's, proposals; "
                        "full_frame names each image as one object)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="another node parameter (pipeline settings), e.g. -p "
                        "unknown_threshold:=0.3 or -p rois:=[0,0,64,64]; repeatable")
    p.add_argument("--depth", action="append", default=[], metavar="DEPTH",
                   help="a depth image registered to the colour image: a single-channel "
                        "16-bit PNG in units of --depth-scale (0 = no depth); give one per "
                        "IMAGE, in the same order; needs --intrinsics")
    p.add_argument("--intrinsics", default=None, metavar="FX,FY,CX,CY",
                   help="the colour camera's focal lengths and principal point (pixels), "
                        "for --depth")
    p.add_argument("--depth-scale", type=float, default=0.001, metavar="METRES",
                   help="metres per unit of the --depth PNGs, as the node's depth_scale "
                        "(default 0.001: millimetres; YCB-Video's 0.0001)")
    add_student_options(p)
    p.add_argument("--out", default=None, metavar="DIR",
                   help="also write labels.jsonl and the images with their boxes drawn here")
    p.set_defaults(func=run)


def _read_payload(path: Path, what: str):
    """The bytes of a regular file of at most :data:`MAX_FILE_BYTES`, as a uint8 array.

    Raises:
        InputError: missing, not a regular file, unreadable or too large.
    """
    import numpy as np

    from ..atomic_io import FileRejected, read_regular_file
    from ..evaluation.replay import InputError

    try:
        return np.frombuffer(read_regular_file(path, MAX_FILE_BYTES), np.uint8)
    except FileNotFoundError:
        raise InputError(f"{path}: no such {what}") from None
    except (FileRejected, OSError) as exc:
        raise InputError(f"{path}: cannot read it: {exc}") from None


def read_image(path: Path):
    """The RGB uint8 ``(H, W, 3)`` image of a PNG or JPEG file.

    Raises:
        InputError: not a readable regular file, too large, or not a decodable PNG or JPEG.
    """
    from ..evaluation.replay import InputError
    from ..perception.compressed_codec import decode_compressed_image, payload_kind
    from ..perception.image_codec import ImageDecodeError

    buf = _read_payload(path, "file")
    try:
        kind = payload_kind(buf)
        image = decode_compressed_image(kind, buf, max_pixels=MAX_PIXELS)
    except ImageDecodeError as exc:
        raise InputError(f"{path}: {exc}") from None
    return upright(image, exif_orientation(buf)) if kind == "jpeg" else image


#: Whether the missing-Pillow warning was given (a list: set once, no ``global``).
_WARNED_NO_PIL: list[bool] = []


def exif_orientation(buf) -> int:
    """The EXIF ``Orientation`` (1..8) of a JPEG payload, 1 when it has none or it cannot be
    read (only the header is parsed)."""
    import io

    try:
        from PIL import Image
    except ImportError as exc:   # torchvision brings Pillow; without it, say so once
        if not _WARNED_NO_PIL:
            _WARNED_NO_PIL.append(True)
            print(f"{PROG}: warning: Pillow is not installed ({exc}): JPEG EXIF orientation "
                  "is not read (photos taken sideways stay sideways)", file=sys.stderr)
        return 1
    try:
        with Image.open(io.BytesIO(memoryview(buf).tobytes())) as im:
            value = int(im.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - metadata only: the pixels decoded already
        return 1
    return value if 1 <= value <= 8 else 1


def upright(image, orientation: int):
    """``image`` as a viewer shows a photo of that EXIF orientation (phones store portrait
    photos sideways with orientation 6 or 8): boxes then lie on the picture people see."""
    import numpy as np

    turn = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1],
            4: lambda a: a[::-1], 5: lambda a: a.transpose(1, 0, 2),
            6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
            8: lambda a: np.rot90(a, 1)}[orientation]
    return np.ascontiguousarray(turn(image))


def read_depth(path: Path, unit_m: float):
    """The float32 metres ``(H, W)`` of a single-channel 16-bit PNG depth image in units of
    ``unit_m`` metres (0 stays 0: no depth), decoded as the node decodes a compressed depth
    image (the size read from the header first).

    Raises:
        InputError: not a readable regular file, too large, or not a 16-bit single-channel
            PNG.
    """
    from ..evaluation.replay import InputError
    from ..perception.compressed_codec import decode_compressed_depth
    from ..perception.image_codec import ImageDecodeError

    buf = _read_payload(path, "depth file")
    try:
        return decode_compressed_depth("16UC1; png", buf, MAX_PIXELS, unit_m)
    except ImageDecodeError as exc:
        raise InputError(f"{path}: {exc} (depth must be a single-channel 16-bit PNG)") from None


def parse_intrinsics(text: str) -> tuple[float, float, float, float]:
    """``FX,FY,CX,CY`` as four finite numbers with positive focal lengths.

    Raises:
        InputError: not four such numbers.
    """
    import math

    from ..evaluation.replay import InputError

    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values) or \
            values[0] <= 0 or values[1] <= 0:
        raise InputError(f"--intrinsics must be FX,FY,CX,CY (four numbers, focal lengths > 0), "
                         f"got {text!r}")
    return values  # type: ignore[return-value]


def _pipeline(args: argparse.Namespace):
    """The offline pipeline of the command's settings and the parsed ``--intrinsics``
    (None without them).

    Raises:
        InputError: a bad option, parameter, bundle or vocabulary.
    """
    from ..evaluation.replay import (InputError, ReplaySettings, check_model,
                                     node_parameter_values, offline_pipeline, parse_param,
                                     resolve_device)
    from ..evaluation.replay_settings import TUNABLE_PARAMS

    if len(args.images) > MAX_IMAGES:
        raise InputError(f"{len(args.images)} images; at most {MAX_IMAGES} a call")
    if args.depth and len(args.depth) != len(args.images):
        raise InputError(f"{len(args.depth)} --depth files for {len(args.images)} images; "
                         "give one per image, in the same order")
    if args.depth and args.intrinsics is None:
        raise InputError("--depth needs --intrinsics FX,FY,CX,CY (the colour camera's)")
    camera = parse_intrinsics(args.intrinsics) if args.intrinsics is not None else None
    low, high = DEPTH_SCALE_RANGE
    if not low <= args.depth_scale <= high:
        raise InputError(f"--depth-scale must be in [{low:g}, {high:g}] metres (the node's "
                         f"depth_scale), got {args.depth_scale}")
    for text in args.param:
        name = text.partition(":=" if ":=" in text else "=")[0].strip()
        if name in NOT_PARAMETERS_HERE:
            raise InputError(f"-p {name}: {NOT_PARAMETERS_HERE[name]}")
    tunable = TUNABLE_PARAMS - NOT_PARAMETERS_HERE.keys()
    params = dict(parse_param(text, tunable) for text in args.param)
    if args.crop_source:
        params["crop_source"] = args.crop_source
    settings = ReplaySettings(model=Path(args.model) if args.model else None,
                              vocabulary=Path(args.vocabulary) if args.vocabulary else None,
                              params=params, device=args.device)
    if args.text_cache_dir is not None:
        settings.text_cache_dir = args.text_cache_dir
    model = check_model(settings.model)
    values = node_parameter_values(settings.params)
    pipe, _, _ = offline_pipeline(model, settings, values, resolve_device(args.device))
    return pipe, camera


#: The name of an image ``--out`` draws: its place among the IMAGE arguments and its stem.
_DRAWN_NAME = re.compile(r"\d{5}_(.*)\.png")


def _earlier_stems(out: Path) -> set[str]:
    """The stems of the images the ``labels.jsonl`` of an earlier run into ``out`` labelled
    (its ``frame_id`` is the image's name): only their drawings are an earlier run's."""
    try:
        text = (out / "labels.jsonl").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return set()
    stems = set()
    for line in text.splitlines():
        try:
            stems.add(Path(str(json.loads(line)["header"]["frame_id"])).stem)
        except (ValueError, KeyError, TypeError):
            continue
    return stems


def _remove_earlier_drawings(out: Path, written: set[str], earlier: set[str],
                             inputs: set[Path]) -> None:
    """Remove the drawn images of an earlier run into ``out`` (``NNNNN_<stem>.png`` of a stem
    its labels.jsonl named, ``earlier``) that this run did not write again (its images
    fewer, other or not labelled): they would pass for this run's. Other files of ``out``
    (the user's own, this run's ``inputs``) are never touched."""
    for entry in out.iterdir():
        drawn = _DRAWN_NAME.fullmatch(entry.name)
        if (drawn is None or drawn.group(1) not in earlier or entry.name in written
                or not entry.is_file() or entry.is_symlink()
                or entry.resolve() in inputs):
            continue
        try:
            entry.unlink()
        except OSError as exc:
            print(f"{PROG}: warning: could not remove {entry}, drawn by an earlier run: "
                  f"{exc}", file=sys.stderr)


class _Stdout:
    """Where each image's line is printed: stdout until it is closed (``| head -n 1``: the
    rest go quietly, Unix tools' way) or fails (a full disk: one error line)."""

    def __init__(self) -> None:
        self.open, self.error = True, ""

    def print(self, line: str) -> None:
        """Print ``line`` while stdout takes it."""
        if not self.open:
            return
        try:
            print(line, flush=True)
        except OSError as exc:
            self.open = False
            if not isinstance(exc, BrokenPipeError):
                self.error = f"cannot write to stdout: {exc}"
            # Python would report the unflushed rest at exit: point stdout at /dev/null
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)


def run(args: argparse.Namespace) -> int:
    """Label every image; returns the exit code (0, or 2 when any input was bad)."""
    from ..atomic_io import atomic_write_bytes
    from ..evaluation.replay import InputError
    from ..perception.labels_output import draw_annotations, labels_document
    from ..perception.pipeline import PipelineError

    try:
        pipe, camera = _pipeline(args)
    except InputError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else None
    bad = colour_only = 0
    lines: list[str] = []
    written: set[str] = set()
    said: set[str] = set()
    stdout = _Stdout()
    try:
        if out is not None:
            try:
                out.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                print(f"{PROG}: error: cannot write into --out {out}: {exc}", file=sys.stderr)
                return 2
            earlier = _earlier_stems(out)
            inputs = {Path(n).resolve() for n in [*args.images, *(args.depth or [])]}
        for i, name in enumerate(args.images):
            if not stdout.open and out is None:
                break  # nobody reads the labels any more
            path = Path(name)
            try:
                image = read_image(path)
            except InputError as exc:
                print(f"{PROG}: error: {exc}", file=sys.stderr)
                bad += 1
                continue
            depth, intrinsics = None, None
            if args.depth:
                try:
                    depth, intrinsics = _depth_for(Path(args.depth[i]), image, camera,
                                                   args.depth_scale)
                except InputError as exc:   # labelled colour only, as the node would
                    print(f"{PROG}: error: {exc}; {path} labelled colour only",
                          file=sys.stderr)
                    colour_only += 1
            try:
                objects, version = pipe.process(image, depth, intrinsics, camera=str(path))
            except PipelineError as exc:
                print(f"{PROG}: error: {exc}", file=sys.stderr)
                bad += 1
                continue
            if depth is not None and pipe.last_depth_status != "used":
                _say_depth_unused(pipe, path, args.depth_scale, said)
            line = json.dumps(labels_document(0, 0, path.name, str(path), version, objects))
            stdout.print(line)
            lines.append(line)
            if out is not None:
                drawn = out / f"{i:05d}_{path.stem}.png"
                if not _write_png(drawn, draw_annotations(image, objects)):
                    print(f"{PROG}: error: could not write {drawn}", file=sys.stderr)
                    bad += 1
                written.add(drawn.name)
        # written whole at the end, and only when something was labelled: a run that fails
        # on every image (a mistyped name) leaves an earlier run's labels.jsonl as it was
        if out is not None and lines:
            atomic_write_bytes(out / "labels.jsonl", "".join(f"{x}\n" for x in lines).encode())
            _remove_earlier_drawings(out, written, earlier, inputs)
    except OSError as exc:
        print(f"{PROG}: error: cannot write into --out {out}: {exc}", file=sys.stderr)
        return 2
    finally:
        pipe.close()
    return _exit_code(len(args.images), bad, colour_only, stdout.error)


def _say_depth_unused(pipe, path: Path, unit_m: float, said: set[str]) -> None:
    """Say on stderr that ``path``'s depth was not used and why; the first time its depth
    looks like another unit than ``--depth-scale`` says, also which
    (:mod:`~vl_distill_ros.perception.depth_units`; ``said`` holds what was said)."""
    from ..perception.depth_units import unit_warning

    print(f"{PROG}: {path}: depth not used ({pipe.last_depth_status}); colour only",
          file=sys.stderr)
    verdict = pipe.depth_unit_verdict(str(path), min_frames=1)
    if verdict is not None and "unit" not in said:
        said.add("unit")
        text = unit_warning(verdict, unit_m, False).replace("depth_scale ", "--depth-scale ")
        print(f"{PROG}: warning: {path}: {text}", file=sys.stderr)


def _exit_code(images: int, bad: int, colour_only: int, stdout_error: str) -> int:
    """Say what went wrong, on stderr; the exit code: 2 when anything did, else 0."""
    if stdout_error:
        print(f"{PROG}: error: {stdout_error}", file=sys.stderr)
    if bad:
        print(f"{PROG}: {bad} of {images} images could not be labelled", file=sys.stderr)
    if colour_only:
        print(f"{PROG}: {colour_only} of {images} images labelled colour only (bad depth "
              "files)", file=sys.stderr)
    return 2 if bad or colour_only or stdout_error else 0


def _depth_for(path: Path, image, camera: tuple[float, float, float, float] | None,
               unit_m: float):
    """``(depth, intrinsics)`` for one image from its depth file and ``--intrinsics``.

    Raises:
        InputError: the depth file is bad or its size is not the image's.
    """
    from ..evaluation.replay import InputError
    from ..perception.camera_model import CameraIntrinsics

    depth = read_depth(path, unit_m)
    height, width = image.shape[:2]
    if depth.shape != (height, width):
        raise InputError(f"{path}: depth is {depth.shape[1]}x{depth.shape[0]} but the image "
                         f"is {width}x{height}")
    assert camera is not None
    return depth, CameraIntrinsics(*camera, width=width, height=height)


def _write_png(path: Path, image_rgb) -> bool:
    """Write an RGB image as PNG; False when it could not be written (encoded in memory and
    written by Python: OpenCV's own writer crashes on a name that is not UTF-8)."""
    import cv2

    from ..perception.image_files import write_image_file

    return write_image_file(path, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
