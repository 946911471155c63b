"""``vl_distill_node`` as a child process in its own process group (replay-eval, benches).

ROS-free (no rclpy import). :func:`node_command` builds the command line
(``python -m vl_distill_ros.ros.node --ros-args -r __ns:=... -p name:=value ...``);
:class:`NodeProcess` starts it with its output going to a log file, in a new session (so
its process group holds the node and anything it starts) and, on Linux, with SIGTERM as its
parent-death signal; :meth:`NodeProcess.stop` always ends the whole group: SIGINT (a clean
shutdown), then SIGTERM, then SIGKILL. :func:`log_tail` quotes the end of the log in
error messages.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

__all__ = ["NODE_NAME", "NodeProcess", "default_node_command", "node_command", "log_tail",
           "ros_param_value"]

#: Name of the node (as :data:`vl_distill_ros.ros.node.NODE_NAME`).
NODE_NAME = "vl_distill_node"

# Loaded here, not in the forked child: dlopen between fork and exec can deadlock.
try:
    _LIBC = ctypes.CDLL("libc.so.6", use_errno=True) if sys.platform.startswith("linux") else None
except OSError:  # pragma: no cover
    _LIBC = None
_PR_SET_PDEATHSIG = 1


def default_node_command() -> list[str]:
    """The node run by this Python interpreter: ``python -m vl_distill_ros.ros.node``."""
    return [sys.executable, "-m", "vl_distill_ros.ros.node"]


def ros_param_value(value: Any) -> str:
    """A Python value as ``-p name:=VALUE`` text (YAML flow style; strings double-quoted)."""
    return json.dumps(value)


def node_command(namespace: str, params: Mapping[str, Any],
                 raw_params: Mapping[str, str] | None = None,
                 base_cmd: Sequence[str] | None = None) -> list[str]:
    """``base_cmd`` (default :func:`default_node_command`) with ``--ros-args``: the node
    renamed to :data:`NODE_NAME` in ``namespace``, ``params`` as ``-p`` values
    (:func:`ros_param_value`), then ``raw_params`` as ``-p`` texts passed as they are."""
    cmd = list(base_cmd or default_node_command())
    cmd += ["--ros-args", "-r", f"__ns:={namespace}", "-r", f"__node:={NODE_NAME}"]
    for name, value in params.items():
        cmd += ["-p", f"{name}:={ros_param_value(value)}"]
    for name, text in (raw_params or {}).items():
        cmd += ["-p", f"{name}:={text}"]
    return cmd


def log_tail(path: Path | None, lines: int = 25, indent: str = "") -> str:
    """The last ``lines`` non-blank lines of the text file ``path``, each prefixed with
    ``indent`` ("" when there is no such file)."""
    if path is None:
        return ""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(indent + ln for ln in [ln for ln in text.splitlines() if ln.strip()][-lines:])


def _child_setup(cpus: Sequence[int] | None) -> Callable[[], None]:
    def setup() -> None:  # pragma: no cover - runs in the forked child
        if _LIBC is not None:
            try:
                _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)  # die with the parent
            except Exception:  # noqa: BLE001 - best effort
                pass
        if cpus:
            try:
                os.sched_setaffinity(0, cpus)
            except OSError:
                pass
    return setup


class NodeProcess:
    """A node command running in its own process group; :meth:`stop` always ends the group.

    Args:
        cmd: the command (e.g. from :func:`node_command`).
        log_path: file that receives stdout and stderr (parent folders are created);
            truncated, or appended to with ``append``.
        env: the child's environment (default: this process's).
        cwd: the child's working directory (default: this process's).
        cpus: pin the child to these CPUs (Linux).

    Raises:
        OSError: the command cannot be started (the log file is closed again).
    """

    def __init__(self, cmd: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None,
                 *, cwd: str | Path | None = None, append: bool = False,
                 cpus: Sequence[int] | None = None) -> None:
        self.cmd = list(cmd)
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab" if append else "wb")
        try:
            self.proc = subprocess.Popen(
                self.cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                env=None if env is None else dict(env), cwd=None if cwd is None else str(cwd),
                start_new_session=True,
                preexec_fn=_child_setup(cpus) if _LIBC is not None or cpus else None)
        except OSError:
            self._log.close()
            raise
        self.pid = self.proc.pid

    def poll(self) -> int | None:
        """The node's exit code, or None while it runs."""
        return self.proc.poll()

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the node's process group (nothing if it is gone)."""
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGINT (clean shutdown), then SIGTERM and SIGKILL to the whole group; reaps the
        node, closes the log and returns the node's exit code."""
        try:
            if self.proc.poll() is None:
                self.signal_group(signal.SIGINT)
                try:
                    self.proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    self.signal_group(signal.SIGTERM)
                    try:
                        self.proc.wait(timeout=5.0)
                    except subprocess.TimeoutExpired:
                        self.signal_group(signal.SIGKILL)
                        self.proc.wait(timeout=10.0)
            # anything the node left behind in its group goes too
            self.signal_group(signal.SIGKILL)
        finally:
            self._log.close()
        return self.proc.returncode
