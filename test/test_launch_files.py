"""launch/replay_eval.launch.py: fails at once without rosbag2, shuts down when the player exits.

The check it runs first (:mod:`vl_distill_ros.ros.launch_support`) is tested here with the real
``PATH`` look-up and the real entry-point mechanism ``ros2cli`` uses to find ``ros2 bag``'s
verbs. ``launch``/``launch_ros`` are not installable from PyPI; the tests that run the launch
file through a real ``LaunchService`` skip without them (build them outside the repository
with ``../shared/tools/launch_stack.sh`` and put its ``site`` and ``stubs`` folders on
``PYTHONPATH`` to run them).
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vl_distill_ros.ros.launch_support import missing_bag_verbs, replay_launch_problem

REPO = Path(__file__).resolve().parents[1]
REPLAY_LAUNCH = REPO / "launch" / "replay_eval.launch.py"


def _bin_with_ros2(tmp_path: Path, body: str = "exit 0") -> Path:
    """A folder holding an executable named ``ros2`` (the stand-in player of these tests)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / "ros2"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
    return bin_dir


def _dist_with_bag_verbs(tmp_path: Path, verbs: tuple[str, ...]) -> Path:
    """A site folder with a distribution that registers ``ros2bag.verb`` entry points, the
    way rosbag2's ros2bag package does."""
    site = tmp_path / "site"
    info = site / "ros2bag_probe-0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ros2bag-probe\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text(
        "[ros2bag.verb]\n" + "".join(f"{v} = ros2bag_probe:Verb\n" for v in verbs))
    return site


def test_without_ros2_on_path_the_problem_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert missing_bag_verbs(("play",)) == "the `ros2` command is not on PATH"
    problem = replay_launch_problem(str(REPO / "demo" / "sample_tabletop"), record=False)
    assert problem.startswith("replay_eval.launch.py needs rosbag2 to play the bag: the `ros2` "
                              "command is not on PATH.")
    assert "vl-distill replay-eval BAG" in problem and "\n" not in problem


def test_ros2_without_rosbag2_and_with_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(_bin_with_ros2(tmp_path)))
    assert missing_bag_verbs(("play",)) == (
        "`ros2 bag play` is not available (rosbag2's ros2bag is not installed)")
    monkeypatch.syspath_prepend(str(_dist_with_bag_verbs(tmp_path, ("play",))))
    assert missing_bag_verbs(("play",)) is None
    assert missing_bag_verbs(("play", "record")) == (
        "`ros2 bag record` is not available (rosbag2's ros2bag is not installed)")
    bag = str(REPO / "demo" / "sample_tabletop")
    assert replay_launch_problem(bag, record=False) is None
    assert "`ros2 bag record`" in replay_launch_problem(bag, record=True)
    assert replay_launch_problem(str(tmp_path / "nope"), record=False) == (
        f"replay_eval.launch.py: bag {tmp_path / 'nope'} does not exist")


def test_replay_launch_checks_first_and_shuts_down_when_the_player_exits():
    """Source-level: the check runs before any action is made, and an OnProcessExit handler
    on the player emits Shutdown (what the LaunchService tests below run for real)."""
    tree = ast.parse(REPLAY_LAUNCH.read_text())
    func = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
                and n.name == "_actions")
    calls = [n for n in ast.walk(func) if isinstance(n, ast.Call)]
    names = [getattr(c.func, "id", "") for c in calls]
    assert "replay_launch_problem" in names
    check_line = calls[names.index("replay_launch_problem")].lineno
    assert all(c.lineno > check_line for c in calls if getattr(c.func, "id", "") in
               ("Node", "ExecuteProcess", "TimerAction"))
    handler = calls[names.index("OnProcessExit")]
    kw = {k.arg: k.value for k in handler.keywords}
    assert ast.unparse(kw["target_action"]) == "player"
    assert "Shutdown(" in ast.unparse(kw["on_exit"])
    # a node that cannot start ends the launch too (the bag played to nobody, exit 0)
    node = calls[names.index("Node")]
    assert "Shutdown(" in ast.unparse({k.arg: k.value for k in node.keywords}["on_exit"])


def test_replay_launch_refuses_empty_image_topics():
    """`image_topics:=,` gave launch's own cryptic "Expected 'value' to be one of [...] but
    got '()'"."""
    bag = str(REPO / "demo" / "sample_tabletop")
    assert "image_topics is empty" in replay_launch_problem(bag, record=False, topics=[])


def _launch_script(launch_file: Path, args: dict[str, str]) -> str:
    """A Python program that runs ``launch_file`` with ``args`` through a real LaunchService
    (what ``ros2 launch`` does) and exits with its return code."""
    return (
        "import sys\n"
        "from launch import LaunchService\n"
        "from launch.actions import IncludeLaunchDescription\n"
        "from launch.launch_description_sources import PythonLaunchDescriptionSource\n"
        "ls = LaunchService()\n"
        f"ls.include_launch_description(IncludeLaunchDescription(PythonLaunchDescriptionSource("
        f"{str(launch_file)!r}), launch_arguments={args!r}.items()))\n"
        "sys.exit(ls.run())\n")


def _run_launch_file(launch_file: Path, args: dict[str, str], env: dict[str, str],
                     timeout: float) -> tuple[int, str, float]:
    """Run ``launch_file`` through a real LaunchService in a child process of its own
    session: ``(return code, output, seconds)``. Past ``timeout`` the whole session is
    killed (the launched node too: a failing check must not leave a node running) and the
    test fails."""
    import signal

    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", _launch_script(launch_file, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the launch ran past {timeout} s:\n{out}")
    return proc.returncode, out, time.monotonic() - start


def _run_launch(args: dict[str, str], env: dict[str, str], timeout: float
                ) -> tuple[int, str, float]:
    """Run replay_eval.launch.py through a real LaunchService in a child process."""
    return _run_launch_file(REPLAY_LAUNCH, args, env, timeout)


def _launch_env(tmp_path: Path, path: str, extra_site: Path | None = None) -> dict[str, str]:
    pythonpath = [str(REPO), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    if extra_site is not None:
        pythonpath.insert(0, str(extra_site))
    return dict(os.environ, PATH=path, PYTHONPATH=os.pathsep.join(p for p in pythonpath if p),
                ROS_HOME=str(tmp_path / "ros_home"))


@pytest.fixture()
def real_launch():
    try:
        import launch  # noqa: F401
        import launch_ros  # noqa: F401
    except ImportError:
        pytest.skip("launch/launch_ros are not installable from PyPI; build them with "
                    "../shared/tools/launch_stack.sh and put them on PYTHONPATH to run this")


def test_launch_without_rosbag2_fails_at_once_with_the_message(real_launch, tmp_path):
    env = _launch_env(tmp_path, _bin_with_ros2(tmp_path).as_posix() + ":/usr/bin:/bin")
    rc, out, secs = _run_launch({"bag": str(REPO / "demo" / "sample_tabletop")}, env, 60)
    assert rc == 1, out
    assert "needs rosbag2 to play the bag" in out and "vl-distill replay-eval BAG" in out
    assert "Traceback" not in out and "vl_distill_node" not in out  # nothing was started
    assert secs < 30


def test_launch_shuts_down_when_the_player_exits(real_launch, tmp_path):
    """With ``ros2 bag play`` present (a stand-in player that exits after 1 s) the launch
    ends by itself, stopping the node, instead of waiting for Ctrl-C."""
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    subprocess.run([sys.executable, str(REPO / "tools" / "ament_develop.py"), "--prefix",
                    str(prefix)], check=True, capture_output=True, timeout=120)
    bin_dir = _bin_with_ros2(tmp_path, 'echo "player: $*"; sleep 1; exit 0')
    env = _launch_env(tmp_path, f"{bin_dir}:/usr/bin:/bin",
                      _dist_with_bag_verbs(tmp_path, ("play",)))
    env["AMENT_PREFIX_PATH"] = os.pathsep.join([str(prefix), env.get("AMENT_PREFIX_PATH", "")])
    rc, out, secs = _run_launch({"bag": str(REPO / "demo" / "sample_tabletop"),
                                 "delay": "1.0"}, env, 120)
    assert rc == 0, out
    assert "player: bag play" in out and "sample_tabletop" in out
    assert "bag playback finished" in out or "process has finished cleanly" in out
    assert secs < 60, out


NODE_LAUNCH = REPO / "launch" / "vl_distill.launch.py"


def _lifecycle_call(ctx, fqn: str, service: str, request, timeout: float):
    """Call ``fqn``'s lifecycle service (``get_state``, ``change_state``: what ``ros2
    lifecycle get/set`` call); its response, or None if none came within ``timeout`` s."""
    import rclpy
    from lifecycle_msgs.srv import ChangeState, GetState
    from rclpy.executors import SingleThreadedExecutor

    node = rclpy.create_node("lifecycle_probe", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    try:
        client = node.create_client({"get_state": GetState, "change_state": ChangeState}[service],
                                    f"{fqn}/{service}")
        if not client.wait_for_service(timeout_sec=timeout):
            return None
        future = client.call_async(request)
        end = time.monotonic() + timeout
        while not future.done() and time.monotonic() < end:
            executor.spin_once(timeout_sec=0.1)
        return future.result() if future.done() else None
    finally:
        executor.shutdown()
        node.destroy_node()


def _lifecycle_state(ctx, fqn: str, timeout: float) -> str:
    """The label of ``fqn``'s lifecycle state (``ros2 lifecycle get``), or "" if it never
    answered within ``timeout`` seconds."""
    from lifecycle_msgs.srv import GetState

    res = _lifecycle_call(ctx, fqn, "get_state", GetState.Request(), timeout)
    return res.current_state.label if res is not None else ""


@pytest.mark.parametrize("autostart,expected", [("false", "unconfigured"), ("true", "active")])
def test_launch_lifecycle_starts_the_managed_node(real_launch, ctx, tmp_path, autostart,
                                                  expected):
    """``lifecycle:=true`` starts vl_distill_lifecycle_node unconfigured; ``autostart:=true``
    has the launch configure it and, once inactive, activate it (real LaunchService)."""
    sys.path.insert(0, str(REPO / "test"))
    from test_node import make_node_test_bundle

    bundle = make_node_test_bundle(tmp_path / "b.vdb")
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    subprocess.run([sys.executable, str(REPO / "tools" / "ament_develop.py"), "--prefix",
                    str(prefix)], check=True, capture_output=True, timeout=120)
    env = _launch_env(tmp_path, os.environ["PATH"])
    env["AMENT_PREFIX_PATH"] = os.pathsep.join([str(prefix), env.get("AMENT_PREFIX_PATH", "")])
    args = {"lifecycle": "true", "autostart": autostart, "model_path": str(bundle),
            "namespace": f"lc_{autostart}"}
    proc = subprocess.Popen([sys.executable, "-c", _launch_script(NODE_LAUNCH, args)],
                            env=env, text=True, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        fqn = f"/lc_{autostart}/vl_distill_node"
        end = time.monotonic() + 60
        label = ""
        while time.monotonic() < end and label != expected and proc.poll() is None:
            label = _lifecycle_state(ctx, fqn, 5.0)
        assert label == expected
        if autostart == "true":  # a later deactivate is the manager's, not undone by launch
            from lifecycle_msgs.msg import Transition
            from lifecycle_msgs.srv import ChangeState

            res = _lifecycle_call(ctx, fqn, "change_state", ChangeState.Request(
                transition=Transition(id=Transition.TRANSITION_DEACTIVATE)), 30.0)
            assert res is not None and res.success
            time.sleep(3.0)
            assert _lifecycle_state(ctx, fqn, 5.0) == "inactive"
            # a manager's cleanup + configure (to reload the model, say): the launch's
            # autostart activated the node again after every configure
            for transition in (Transition.TRANSITION_CLEANUP, Transition.TRANSITION_CONFIGURE):
                res = _lifecycle_call(ctx, fqn, "change_state", ChangeState.Request(
                    transition=Transition(id=transition)), 30.0)
                assert res is not None and res.success
            time.sleep(3.0)
            assert _lifecycle_state(ctx, fqn, 5.0) == "inactive"
    finally:
        proc.send_signal(subprocess.signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, subprocess.signal.SIGKILL)  # the node too
            out, _ = proc.communicate()
    assert "vl_distill_lifecycle_node" in out, out
    assert out.count("ready:") == (autostart == "true"), out


def _run_node_launch(args: dict[str, str], env: dict[str, str], timeout: float
                     ) -> tuple[int, str]:
    """Run vl_distill.launch.py through a real LaunchService in a child process."""
    code, out, _ = _run_launch_file(NODE_LAUNCH, args, env, timeout)
    return code, out


def test_a_params_file_that_does_not_exist_stops_the_launch(real_launch, tmp_path):
    """launch_ros only warned ("Parameter file path is not a file") and the node ran on its
    defaults: a mistyped params_file went unnoticed."""
    env = _launch_env(tmp_path, os.environ["PATH"])
    rc, out = _run_node_launch({"params_file": str(tmp_path / "my_parms.yaml")}, env, 60)
    assert rc == 1 and "my_parms.yaml is not a file" in out, out
    assert "vl_distill_node-1" not in out  # nothing was started


def test_replay_launch_ends_when_the_node_cannot_start_and_expands_home(real_launch, tmp_path):
    """A node that died at start-up (a bad vocabulary file) left the bag playing to nobody
    and the launch exiting 0; `bag:=~/...` passed the check but reached `ros2 bag play`
    with a literal ~."""
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    subprocess.run([sys.executable, str(REPO / "tools" / "ament_develop.py"), "--prefix",
                    str(prefix)], check=True, capture_output=True, timeout=120)
    home = tmp_path / "home"
    home.mkdir()
    (home / "bags").symlink_to(REPO / "demo")
    bin_dir = _bin_with_ros2(tmp_path, 'echo "player: $*"; sleep 60; exit 0')
    env = _launch_env(tmp_path, f"{bin_dir}:/usr/bin:/bin",
                      _dist_with_bag_verbs(tmp_path, ("play",)))
    env.update(HOME=str(home), AMENT_PREFIX_PATH=os.pathsep.join(
        [str(prefix), env.get("AMENT_PREFIX_PATH", "")]))
    rc, out, secs = _run_launch({"bag": "~/bags/sample_tabletop", "delay": "0.5",
                                 "vocabulary_file": str(tmp_path / "missing.yaml")}, env, 120)
    assert f"player: bag play {home}/bags/sample_tabletop" in out, out
    assert "cannot start" in out and "process[vl_distill_node-1] was required" in out, out
    assert secs < 50, out  # not the player's 60 s
