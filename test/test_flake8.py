"""ament_flake8 over the package, launch/ and test/, as ROS 2 Python packages carry it.

The style test of the ament_python template (ros2/demos): ``ament_flake8.main.main_with_errors``
with the project's configuration, the ``[flake8]`` section of setup.cfg (line length 100).
"""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.flake8
@pytest.mark.linter
def test_flake8(monkeypatch):
    main_with_errors = pytest.importorskip(
        "ament_flake8.main", reason="ament_flake8 is not installed (requirements.txt)"
    ).main_with_errors
    monkeypatch.chdir(REPO)
    rc, errors = main_with_errors(argv=["--config", "setup.cfg", "vl_distill_ros", "launch",
                                        "test"])
    assert rc == 0, \
        "Found %d code style errors / warnings:\n" % len(errors) + "\n".join(errors)
