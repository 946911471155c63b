"""Session-wide test setup: DDS stays on loopback, each session gets its own domain."""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from helpers import missing_ycb_models
from vl_distill_ros.sim.meshes import default_models_dir

# Set before anything imports rclpy: discovery never leaves the loopback interface, and a
# per-session domain keeps parallel test runs apart.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
# The YCB models folder: $VL_DISTILL_YCB_MODELS (the variable vl-distill render, make-bag and
# ablate read), else ../shared/ycb_models next to the checkout.
YCB_MODELS = Path(default_models_dir(relative_to=REPO_ROOT)).expanduser().resolve()


@pytest.fixture(scope="session", autouse=True)
def ros_localhost_env() -> dict:
    """Assert the DDS network rule holds for every test in the session."""
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert os.environ["ROS_DOMAIN_ID"].isdigit()
    return {k: os.environ[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID")}


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def ycb_models() -> Path:
    """The shared YCB models folder; tests that need it skip with the reason if absent, and
    fail when the environment variable CI is true (:func:`helpers.missing_ycb_models`)."""
    if not (YCB_MODELS / "011_banana" / "textured.obj").exists():
        missing_ycb_models(f"YCB models not found at {YCB_MODELS}")
    return YCB_MODELS


@pytest.fixture(scope="module")
def ctx():
    """A private rclpy context per test module (rclpy is imported only by the tests that
    ask for it)."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    context.try_shutdown()
