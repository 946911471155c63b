"""Where the package's data files are found (``vl_distill_ros/package_files.py``) in the
layouts a user installs it in, and what a ROS start-up that cannot write its logs says."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from vl_distill_ros import package_files

REPO = Path(__file__).resolve().parents[1]


def _prefix_with(prefix: Path, relative: str, indexed: bool) -> Path:
    """``prefix/share/vl_distill_ros/relative`` (and the ament index entry when ``indexed``)."""
    target = prefix / "share" / "vl_distill_ros" / relative
    target.parent.mkdir(parents=True)
    target.write_text("x: 1\n")
    if indexed:
        marker = prefix / "share" / "ament_index" / "resource_index" / "packages"
        marker.mkdir(parents=True)
        (marker / "vl_distill_ros").write_text("")
    return target


def test_config_files_are_found_in_the_ament_prefix_and_the_packages_own_prefix(
        tmp_path, monkeypatch):
    """A colcon-style install (``setup.py install --prefix P``, P on AMENT_PREFIX_PATH) kept
    the split, reference vocabulary and shared-memory profile in P/share, where only the
    source tree and sys.prefix were looked in: replay-eval ran without ID/OOD groups."""
    monkeypatch.chdir(tmp_path)
    colcon = _prefix_with(tmp_path / "install", "config/only_here.yaml", indexed=True)
    monkeypatch.setenv("AMENT_PREFIX_PATH", f"/nowhere{os.pathsep}{tmp_path / 'install'}")
    assert package_files.find_config("config/only_here.yaml") == colcon
    monkeypatch.setenv("AMENT_PREFIX_PATH", "")
    assert package_files.find_config("config/only_here.yaml") is None
    # the package inside <prefix>/lib/python3.11/site-packages/vl_distill_ros
    own = _prefix_with(tmp_path / "user", "config/own.yaml", indexed=False)
    site = tmp_path / "user" / "lib" / "python3.11" / "site-packages" / "vl_distill_ros"
    monkeypatch.setattr(package_files, "__file__", str(site / "package_files.py"))
    assert package_files.find_config("config/own.yaml") == own


def test_a_default_vocabulary_is_the_packages_from_any_folder(tmp_path, monkeypatch):
    """import-bop's and make-bag's default --vocabulary / --split were read relative to the
    current folder: outside the checkout, 'vocabulary file not found'."""
    from vl_distill_ros.cli import build_parser

    monkeypatch.chdir(tmp_path)
    parser = build_parser()
    args = parser.parse_args(["import-bop", "scene", "--out", "bag"])
    assert args.vocabulary == REPO / "config" / "ycb_vocabulary.yaml"
    args = parser.parse_args(["make-bag", "--out", "bag"])
    assert args.vocabulary.is_file() and args.split == REPO / "config/splits/ycb_paper.yaml"
    given = parser.parse_args(["import-bop", "s", "--out", "b", "--vocabulary", "mine.yaml"])
    assert given.vocabulary == Path("mine.yaml")
    # a folder with its own config/ycb_vocabulary.yaml reads it, as it did
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "ycb_vocabulary.yaml").write_text("labels: []\n")
    local = parser.parse_args(["import-bop", "s", "--out", "b"])
    assert local.vocabulary == Path("config/ycb_vocabulary.yaml")


def test_the_node_says_in_one_line_that_ros_cannot_write_its_logs(tmp_path):
    """With an unwritable home folder (ROS_HOME and ROS_LOG_DIR unset) rclpy.init failed to
    make ~/.ros/log and the node ended in a traceback."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("ROS_HOME", "ROS_LOG_DIR")}
    env["HOME"] = str(blocker / "home")
    proc = subprocess.run([sys.executable, "-m", "vl_distill_ros.ros.node", "--ros-args",
                           "-p", "crop_source:=full_frame"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    assert "cannot start: ROS could not initialise" in proc.stderr
    assert "set ROS_LOG_DIR (or ROS_HOME) to a writable folder" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_live_replay_gives_its_own_ros_logs_the_nodes_folder(monkeypatch):
    """The replay's own rclpy.init made ~/.ros/log too (a traceback, exit 1, with an
    unwritable home): it uses the node's log folder unless ROS_LOG_DIR is set."""
    from vl_distill_ros.evaluation.live_replay import _init_with_log_dir
    from vl_distill_ros.evaluation.replay_settings import InputError

    monkeypatch.delenv("ROS_LOG_DIR", raising=False)
    seen: list = []
    ok = SimpleNamespace(init=lambda args, context: seen.append(os.environ.get("ROS_LOG_DIR")))
    _init_with_log_dir(ok, None, "/out/ros_log")
    assert seen == ["/out/ros_log"] and "ROS_LOG_DIR" not in os.environ
    monkeypatch.setenv("ROS_LOG_DIR", "/mine")
    _init_with_log_dir(ok, None, "/out/ros_log")
    assert seen[-1] == "/mine" and os.environ["ROS_LOG_DIR"] == "/mine"

    def fails(args, context):
        raise RuntimeError("failed to initialize logging: Failed to create log directory")
    with pytest.raises(InputError, match="ROS could not initialise: failed to initialize "
                                         "logging"):
        _init_with_log_dir(SimpleNamespace(init=fails), None, None)
