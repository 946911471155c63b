"""The library's Python ``logging`` records on the node's ROS logger (and so on ``/rosout``).

The ROS-free packages (``model``, ``perception``, ``config``) warn through
``logging.getLogger(__name__)``: a vocabulary file's unknown keys, a corrupt text-cache file
set aside, a bundle read with a fallback. In a node process nothing handled them, so Python
printed them bare on stderr: not on ``/rosout``, not in the node's log file, without the
node's name. :func:`install` forwards the records of the ``vl_distill_ros`` logger tree to a
node's logger while the node lives; with several nodes in one process the newest one takes
them.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

__all__ = ["PACKAGE_LOGGER", "install", "remove"]

#: The logger whose tree (every module of the package) is forwarded.
PACKAGE_LOGGER = "vl_distill_ros"


class _RosHandler(logging.Handler):
    """Forwards each record to the newest installed ROS logger, at the matching severity."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.loggers: list[Any] = []
        self.guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self.guard:
            target = self.loggers[-1] if self.loggers else None
        if target is None:
            return
        try:
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                text = f"{text} ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
            level = record.levelno
            if level >= logging.CRITICAL:
                target.fatal(text)
            elif level >= logging.ERROR:
                target.error(text)
            elif level >= logging.WARNING:
                target.warning(text)
            elif level >= logging.INFO:
                target.info(text)
            else:
                target.debug(text)
        except Exception:  # noqa: BLE001 - a log line must never break the caller
            self.handleError(record)


_handler = _RosHandler()


def install(ros_logger: Any) -> Any:
    """Send the package's ``logging`` records (WARNING and above, as Python's default level
    lets through) to ``ros_logger`` (an rclpy ``RcutilsLogger``: ``node.get_logger()``) until
    :func:`remove` is called with the same logger; returns ``ros_logger``."""
    package = logging.getLogger(PACKAGE_LOGGER)
    with _handler.guard:
        _handler.loggers.append(ros_logger)
        if _handler not in package.handlers:
            package.addHandler(_handler)
    return ros_logger


def remove(ros_logger: Any) -> None:
    """Stop forwarding to ``ros_logger`` (nothing if it was not installed); once no logger is
    left the records go where Python sends them by default again."""
    package = logging.getLogger(PACKAGE_LOGGER)
    with _handler.guard:
        for i in range(len(_handler.loggers) - 1, -1, -1):
            if _handler.loggers[i] is ros_logger:
                del _handler.loggers[i]
                break
        if not _handler.loggers and _handler in package.handlers:
            package.removeHandler(_handler)
