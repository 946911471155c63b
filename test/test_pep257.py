"""ament_pep257 (pydocstyle) over the package, launch/ and test/, as ROS 2 Python packages
carry it.

Convention ``google`` (the docstrings use Google-style ``Args:``/``Returns:``/``Raises:``
sections), which already leaves out the checks that contradict it (D203, D204, D213, D215,
D400, D401, D404, D406-D409, D413). Also left out, everywhere:

* D205, D209, D415: summaries may wrap onto a second line (the house style), so the first
  *line* need not be a sentence followed by a blank line, and the closing quotes may end the
  last text line;
* D403: a summary may start with an identifier (``rclpy``, ``OpenGL``), not a capitalised
  word;
* D105, D107: magic methods and ``__init__`` are documented by their class docstring (as
  ament's own convention).

Public modules, classes, functions and methods of the package need a docstring (D100-D104);
test modules and test functions are named after what they check, so test/ leaves D100-D104
out too.
"""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IGNORE = ["D105", "D107", "D205", "D209", "D403", "D415"]
TEST_IGNORE = ["D100", "D101", "D102", "D103", "D104"]


def _pep257(monkeypatch, paths, ignore):
    main = pytest.importorskip(
        "ament_pep257.main", reason="ament_pep257 is not installed (requirements.txt)").main
    monkeypatch.chdir(REPO)
    return main(argv=["--convention", "google", "--add-ignore", *ignore, "--", *paths])


@pytest.mark.linter
@pytest.mark.pep257
def test_pep257_package_and_launch(monkeypatch):
    rc = _pep257(monkeypatch, ["vl_distill_ros", "launch"], IGNORE)
    assert rc == 0, "Found code style errors / warnings"


@pytest.mark.linter
@pytest.mark.pep257
def test_pep257_tests(monkeypatch):
    rc = _pep257(monkeypatch, ["test"], IGNORE + TEST_IGNORE)
    assert rc == 0, "Found code style errors / warnings"
