"""The installed layout ROS 2 needs (tools/ament_develop.py, run by `make setup`).

The same install step `make setup` runs on .venv is run here on a fresh venv in a temporary
folder; the real ament_index_python then has to find the package there, with every data file
a link into this checkout and an executable ``lib/vl_distill_ros/vl_distill_node`` that runs
this checkout's node. A wheel built from the checkout (what ``pip install .`` and a colcon
install put in place) must hold the same data files.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from ament_index_python.packages import (get_package_prefix, get_package_share_directory,
                                         get_packages_with_prefixes)

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "ament_develop.py"
PKG = "vl_distill_ros"


def _run_tool(prefix: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), "--prefix", str(prefix)],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def prefix(tmp_path_factory) -> Path:
    """A fresh venv (no pip, no packages) with the install step run on it."""
    venv = tmp_path_factory.mktemp("prefix") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    done = _run_tool(venv)
    assert done.returncode == 0, done.stderr
    return venv


def _linked_into_checkout(path: Path) -> bool:
    return path.is_symlink() and path.resolve().is_relative_to(REPO.resolve())


def test_ament_index_finds_the_package_with_links_into_the_checkout(prefix, monkeypatch):
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    assert get_package_prefix(PKG) == str(prefix)
    assert PKG in get_packages_with_prefixes()
    marker = prefix / "share" / "ament_index" / "resource_index" / "packages" / PKG
    assert _linked_into_checkout(marker)
    share = Path(get_package_share_directory(PKG))
    assert share == prefix / "share" / PKG
    for rel in ("package.xml", "launch/vl_distill.launch.py", "launch/replay_eval.launch.py",
                "config/vl_distill.yaml", "config/fastdds_shm_localhost.xml",
                "config/splits/ycb_paper.yaml"):
        assert _linked_into_checkout(share / rel), rel
        assert (share / rel).resolve() == (REPO / rel).resolve(), rel
    # what the README's FASTRTPS_DEFAULT_PROFILES_FILE line builds from `ros2 pkg prefix`
    assert (Path(get_package_prefix(PKG)) / "share" / PKG / "config"
            / "fastdds_shm_localhost.xml").is_file()


def test_lib_executable_runs_this_checkouts_node(prefix, tmp_path):
    """`ros2 run vl_distill_ros vl_distill_node` executes lib/vl_distill_ros/vl_distill_node:
    it must be executable and start this checkout's node (a missing bundle: exit 1 with the
    node's own start-up message)."""
    exe = prefix / "lib" / PKG / "vl_distill_node"
    assert exe.is_file() and os.access(exe, os.X_OK)
    assert (prefix / "lib" / PKG / "vl-distill").is_file()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([str(exe), "--ros-args", "-p",
                           f"model_path:={tmp_path / 'missing.vdb'}"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot load model bundle" in done.stdout + done.stderr
    help_out = subprocess.run([str(exe), "--help"], capture_output=True, text=True,
                              timeout=120, env=env)
    assert help_out.returncode == 0 and "crop_source" in help_out.stdout


def _shell(prefix: Path, script: str, **env: str) -> list[str]:
    base = {k: v for k, v in os.environ.items() if k != "AMENT_PREFIX_PATH"}
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                          env={**base, **env, "P": str(prefix)})
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_activate_puts_the_prefix_on_ament_prefix_path_and_deactivate_restores(prefix):
    script = ('source "$P/bin/activate"; echo "$AMENT_PREFIX_PATH"; '
              'source "$P/bin/activate"; echo "$AMENT_PREFIX_PATH"; '
              'deactivate; echo "${AMENT_PREFIX_PATH-unset}"')
    assert _shell(prefix, script, AMENT_PREFIX_PATH="/opt/ros/jazzy") == [
        f"{prefix}:/opt/ros/jazzy", f"{prefix}:/opt/ros/jazzy", "/opt/ros/jazzy"]
    assert _shell(prefix, script) == [str(prefix), str(prefix), "unset"]
    # ament_index_python in the activated shell (the one step the README gives)
    found = _shell(prefix, f'source "$P/bin/activate"; {sys.executable} -c "from '
                   f'ament_index_python.packages import get_package_share_directory as g; '
                   f'print(g(\'{PKG}\'))"')
    assert found == [str(prefix / "share" / PKG)]


def test_rerun_is_idempotent_and_prunes_stale_links(prefix):
    stale = prefix / "share" / PKG / "config" / "renamed_away.yaml"
    stale.symlink_to(REPO / "config" / "renamed_away.yaml")
    before = (prefix / "bin" / "activate").read_text()
    done = _run_tool(prefix)
    assert done.returncode == 0, done.stderr
    assert not stale.is_symlink()
    assert (prefix / "bin" / "activate").read_text() == before  # the hook is added once
    assert before.count("vl_distill_ros ament prefix (tools/ament_develop.py)") == 2


def test_bad_prefix_is_one_line_exit_2(tmp_path):
    done = _run_tool(tmp_path / "nope")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "is not a directory" in done.stderr


def test_wheel_installs_the_same_data_files(prefix, tmp_path):
    """`pip install .` / colcon install setup.py's data_files; the links mirror them."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "setup.cfg", "package.xml", "resource", "launch", "config",
                 PKG):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, src / name,
             **({"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree
                else {}))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    wheel = next((tmp_path / "dist").glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        data = {n.split(".data/data/", 1)[1] for n in zf.namelist() if ".data/data/" in n}
    linked = {str(p.relative_to(prefix)) for p in (prefix / "share").rglob("*")
              if p.is_symlink()}
    assert data == linked
    assert "share/ament_index/resource_index/packages/vl_distill_ros" in data
