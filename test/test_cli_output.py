"""The vl-distill command's output streams in a locale that does not encode UTF-8."""
from __future__ import annotations

import os
import subprocess
import sys


def test_stdout_without_utf8_writes_what_it_cannot_encode_escaped():
    """In the C locale with PYTHONUTF8=0, stdout is ASCII: `vl-distill ablate` ended with a
    UnicodeEncodeError when it printed a non-ASCII row name, after all its training. The
    command's main now has stdout escape such characters (as stderr does)."""
    code = ("import sys\n"
            "from vl_distill_ros import cli\n"
            "print(sys.stdout.encoding, flush=True)\n"
            "cli.printable_output()\n"
            "print('caf\\u00e9 \\u9999')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "PYTHONIO"))}
    env.update(LC_ALL="C", LANG="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    encoding, text = done.stdout.decode("ascii").splitlines()
    assert encoding.lower() in ("ascii", "ansi_x3.4-1968")      # what the test is about
    assert text == "caf\\xe9 \\u9999"
