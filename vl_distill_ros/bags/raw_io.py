"""The lowest layer of bag access (rosbags only): message type names, the type store, the
bag reader and the serialised messages it yields, and the header fields read straight from
CDR bytes. :mod:`~vl_distill_ros.bags.bag_io` builds camera bags on it and re-exports these
names.
"""
from __future__ import annotations

import functools
import struct
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

__all__ = ["IMAGE_TYPE", "COMPRESSED_IMAGE_TYPE", "IMAGE_TYPES", "CAMERA_INFO_TYPE",
           "STRING_TYPE", "BagError", "RawMessage", "typestore", "open_reader",
           "iter_raw_messages", "header_stamp", "header_frame_id"]

IMAGE_TYPE = "sensor_msgs/msg/Image"
#: image_transport's ``compressed`` (colour) and ``compressedDepth`` (depth) messages.
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
#: Message types read as images (colour or depth).
IMAGE_TYPES: tuple[str, ...] = (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
STRING_TYPE = "std_msgs/msg/String"


class BagError(ValueError):
    """A bag or ground-truth file cannot be written or read; the message says why."""


class RawMessage(NamedTuple):
    """One serialised message as stored: CDR bytes ``rclpy.serialization`` understands."""

    topic: str
    msgtype: str
    timestamp_ns: int
    data: bytes


@functools.lru_cache(maxsize=1)
def typestore():
    """The rosbags type store of ROS 2 Jazzy's messages (built once).

    Raises:
        BagError: rosbags is not installed.
    """
    try:
        from rosbags.typesys import Stores, get_typestore
    except ImportError as exc:  # pragma: no cover - rosbags is a requirement
        raise BagError(f"reading and writing bags needs the 'rosbags' package ({exc}); "
                       "install it with 'pip install rosbags'") from None
    return get_typestore(Stores.ROS2_JAZZY)


def open_reader(path: Path):
    """An open ``rosbags`` reader of the bag folder (or single .mcap/.db3 file) ``path``."""
    from rosbags.rosbag2 import Reader
    from rosbags.rosbag2.errors import ReaderError

    if not path.exists():
        raise BagError(f"bag not found: {path}")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        raise BagError(f"{path} is not a rosbag2 bag: no metadata.yaml in the folder")
    try:
        reader = Reader(path)
        reader.open()
    except ReaderError as exc:
        raise BagError(f"cannot open bag {path}: {exc} (corrupt or not a rosbag2 bag)") from None
    except Exception as exc:  # noqa: BLE001 - OSError, sqlite3, zstd, struct: all corrupt
        raise BagError(f"cannot open bag {path}: {type(exc).__name__}: {exc} (corrupt or not a "
                       "rosbag2 bag)") from None
    return reader


def _read_errors() -> tuple[type[BaseException], ...]:
    """What reading a corrupt storage file may raise: the reader's own errors, I/O and
    sqlite errors, and whatever a decompressor or parser throws on flipped bytes (e.g.
    ``ZstdError``, ``struct.error``), so every one is Exception."""
    return (Exception,)


def iter_raw_messages(path: str | Path, topics: Sequence[str] | None = None
                      ) -> Iterator[RawMessage]:
    """Yield every message of the bag (or of ``topics``) in bag-time order as
    :class:`RawMessage` ``(topic, msgtype, timestamp_ns, CDR bytes)``.

    The bytes are the serialised message exactly as stored: pass them to
    ``rclpy.serialization.deserialize_message`` or publish them with a raw publisher.
    Raises :class:`BagError` when the bag is missing, corrupt or (part way) unreadable.
    """
    path = Path(path).expanduser()
    reader = open_reader(path)
    try:
        conns = [c for c in reader.connections if topics is None or c.topic in set(topics)]
        if topics is not None:
            known = {c.topic for c in reader.connections}
            unknown = [t for t in topics if t not in known]
            if unknown:
                raise BagError(f"{path}: no topic(s) {unknown}; the bag has {sorted(known)}")
        if not conns:
            return
        try:
            for conn, timestamp, data in reader.messages(connections=conns):
                yield RawMessage(conn.topic, conn.msgtype, int(timestamp), bytes(data))
        except _read_errors() as exc:
            raise BagError(f"cannot read messages of bag {path}: {exc} (the storage file is "
                           "corrupt or truncated)") from None
    finally:
        reader.close()


def header_stamp(data: bytes, path: Path, topic: str) -> int:
    """``header.stamp`` (ns) of a serialised message that starts with a Header."""
    if len(data) < 12 or data[0] != 0 or data[1] not in (0, 1, 2, 3):
        raise BagError(f"{path}: a message on {topic} is not CDR with a header (corrupt bag)")
    sec, nanosec = struct.unpack_from("<iI" if data[1] & 1 else ">iI", data, 4)
    return int(sec) * 1_000_000_000 + int(nanosec)


def header_frame_id(data: bytes) -> str | None:
    """``header.frame_id`` of a serialised (CDR) message that starts with a Header, or None
    when the bytes are not that."""
    if len(data) < 16 or data[0] != 0 or data[1] not in (0, 1, 2, 3):
        return None
    (length,) = struct.unpack_from("<I" if data[1] & 1 else ">I", data, 12)
    if length < 1 or 16 + length > len(data):
        return None
    return data[16:16 + length - 1].decode("utf-8", "replace")
