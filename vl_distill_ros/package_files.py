"""Where the package's data files are: ``config/...`` in the source tree, or in the installed
``share/vl_distill_ros/`` of whichever prefix holds the package (no ROS import).

A source checkout (the editable install) keeps them beside the package; an install keeps
them in ``<prefix>/share/vl_distill_ros`` (setup.py's ``data_files``): the prefix of the
Python environment (``pip install``), the prefix the ament index names (a colcon build or
``setup.py install --prefix P`` with ``P`` on ``AMENT_PREFIX_PATH``), or the prefix the
package itself sits in (``<prefix>/lib/pythonX.Y/site-packages/vl_distill_ros``).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

__all__ = ["PACKAGE", "share_dirs", "find_config", "config_argument", "packaged_path",
           "add_packaged_option"]

PACKAGE = "vl_distill_ros"


def share_dirs() -> list[Path]:
    """Folders that may hold the package's data files, most specific first: the source tree,
    the ament index's prefixes, the package's own prefix, the Python environment's."""
    here = Path(__file__).resolve()
    dirs = [here.parents[1]]                               # the source tree (editable)
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix and (Path(prefix) / "share" / "ament_index" / "resource_index"
                       / "packages" / PACKAGE).is_file():
            dirs.append(Path(prefix) / "share" / PACKAGE)
    if len(here.parents) > 4:                              # <prefix>/lib/pythonX.Y/site-packages
        dirs.append(here.parents[4] / "share" / PACKAGE)
    dirs.append(Path(sys.prefix) / "share" / PACKAGE)
    return list(dict.fromkeys(dirs))


def find_config(relative: str) -> Path | None:
    """The package's data file ``relative`` (e.g. ``config/ycb_vocabulary.yaml``) from the
    first of :func:`share_dirs` that has it, else the current directory's; None when none
    does."""
    candidates = [d / relative for d in share_dirs()] + [Path.cwd() / relative]
    return next((p for p in candidates if p.is_file()), None)


def config_argument(value: str | os.PathLike, default: str) -> Path:
    """A command-line path option whose default names a packaged file: the value as given,
    except ``default`` where the current directory has no such file, which is looked up
    with :func:`find_config` (it was read relative to the current directory, so it worked
    only inside the checkout)."""
    if str(value) == default and not Path(default).is_file():
        return find_config(default) or Path(default)
    return Path(value).expanduser()


def packaged_path(default: str) -> Callable[[str], Path]:
    """An argparse ``type`` for an option whose ``default`` names a packaged file
    (:func:`config_argument`)."""
    def convert(value: str) -> Path:
        return config_argument(value, default)
    convert.__name__ = "path"
    return convert


def add_packaged_option(parser: Any, flag: str, relative: str, help_text: str) -> None:
    """Add the path option ``flag`` to the argparse ``parser`` whose default is the package's
    data file ``relative`` (:func:`packaged_path`), its help ``help_text`` followed by the
    default."""
    parser.add_argument(flag, default=relative, type=packaged_path(relative),
                        help=f"{help_text} (default: the package's %(default)s)")
