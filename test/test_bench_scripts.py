"""Every bench script and developer tool starts: ``--help`` exits 0, so its imports of the
package resolve (a name moved between the package's modules breaks a bench only when it
is next run, which the suite otherwise never does)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*ROOT.glob("bench/[a-z]*.py"), *ROOT.glob("tools/[a-z]*.py")])


def test_the_scripts_are_found():
    """The glob sees the benches the README lists (a moved folder fails here, not silently)."""
    names = {p.name for p in SCRIPTS}
    assert {"node_throughput.py", "proposals_recall.py", "student_vs_teacher.py",
            "ament_develop.py"} <= names, names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_script_answers_help(script: Path):
    """``python SCRIPT --help``: exit status 0 and a usage line."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(script), "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage" in done.stdout.lower(), done.stdout[:500]
