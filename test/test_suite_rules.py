"""Rules of the suite and the package layout: when a test may skip, and ROS-free core."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import missing_ycb_models


def test_missing_ycb_models_skips_on_a_users_machine(monkeypatch):
    for value in (None, "", "false", "0"):
        if value is None:
            monkeypatch.delenv("CI", raising=False)
        else:
            monkeypatch.setenv("CI", value)
        with pytest.raises(pytest.skip.Exception, match="models not here"):
            missing_ycb_models("models not here")


@pytest.mark.parametrize("value", ["true", "TRUE", "True"])
def test_missing_ycb_models_fails_in_ci(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="models not here.*CI=true"):
        missing_ycb_models("models not here")


def test_ycb_models_fixture_uses_the_rule(monkeypatch, tmp_path):
    """The conftest fixture goes through missing_ycb_models (skip locally, fail in CI)."""
    import conftest

    monkeypatch.setattr(conftest, "YCB_MODELS", tmp_path / "no_models_here")
    fixture = conftest.ycb_models.__wrapped__
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no_models_here"):
        fixture()
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="no_models_here"):
        fixture()


_IMPORT_CORE = r"""
import importlib, json, pkgutil, sys
import vl_distill_ros.core as core
names = ["vl_distill_ros.core"]
names += [m.name for m in pkgutil.walk_packages(core.__path__, "vl_distill_ros.core.")]
first = None
for name in names:
    importlib.import_module(name)
    if first is None and "rclpy" in sys.modules:
        first = name
print(json.dumps({"modules": names, "first_with_rclpy": first,
                  "ros": sorted(m for m in sys.modules if m.split(".")[0] in
                                ("rclpy", "rosidl_runtime_py", "sensor_msgs", "std_msgs"))}))
"""


def test_core_imports_no_rclpy():
    """vl_distill_ros.core and every module under it import without rclpy (training and
    evaluation run where ROS is not installed); a fresh interpreter, so nothing else in the
    session has imported rclpy already."""
    proc = subprocess.run([sys.executable, "-c", _IMPORT_CORE], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(out["modules"]) > 15 and "vl_distill_ros.core.pipeline" in out["modules"]
    assert out["first_with_rclpy"] is None, f"{out['first_with_rclpy']} imports rclpy"
    assert out["ros"] == []
