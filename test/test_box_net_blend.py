"""Weight interpolation of two box networks (``tools/blend_box_nets.py``,
:mod:`vl_distill_ros.training.box_net_blend`)."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import load_script


def _export(tmp_path, seed: int):
    import torch

    from vl_distill_ros.training.box_net import BoxNetModel, export_onnx

    torch.manual_seed(seed)
    model = BoxNetModel(pretrained=False)
    with torch.no_grad():   # batch norms with work to do, so the export folds them
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return export_onnx(model, tmp_path / f"net{seed}" / "box_net.onnx")


def _conv_arrays(path) -> list[np.ndarray]:
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    arrays = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    return [arrays[name] for node in proto.graph.node if node.op_type == "Conv"
            for name in node.input[1:]]


def _outputs(path, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def test_the_blend_mixes_every_convolution_and_loads_as_a_box_network(
        repo_root, tmp_path, capsys):
    from vl_distill_ros.perception.box_net import BoxNet

    tool = load_script(repo_root / "tools" / "blend_box_nets.py")
    first, second = _export(tmp_path, 0), _export(tmp_path, 1)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 96, 128)).astype(np.float32)
    a, b = _conv_arrays(first), _conv_arrays(second)
    assert len(a) > 40 and not all(np.array_equal(p, q) for p, q in zip(a, b))
    for weight in (0.0, 0.3, 1.0):
        out = tmp_path / f"blend{weight}" / "box_net.onnx"
        assert tool.main([str(first), str(second), "--weight", str(weight),
                          "--out", str(out)]) == 0
        assert capsys.readouterr().out.strip() == str(out)
        for mixed, p, q in zip(_conv_arrays(out), a, b):
            np.testing.assert_allclose(mixed, (1 - weight) * p + weight * q, atol=1e-6)
        BoxNet(out)   # the node's loader takes it: same graph, same metadata
    for ends, weight in ((first, 0.0), (second, 1.0)):
        got = _outputs(tmp_path / f"blend{weight}" / "box_net.onnx", x)
        for g, w in zip(got, _outputs(ends, x)):
            np.testing.assert_allclose(g, w, atol=1e-6)
    middle = _outputs(tmp_path / "blend0.3" / "box_net.onnx", x)
    assert not np.allclose(middle[0], _outputs(first, x)[0], atol=1e-4)
    shipped = repo_root / "vl_distill_ros" / "bundles" / "box_net.onnx"
    same = tmp_path / "same.onnx"   # a network blended with itself is itself
    assert tool.main([str(shipped), str(shipped), "--weight", "0.5", "--out", str(same)]) == 0
    for g, w in zip(_outputs(same, x), _outputs(shipped, x)):
        np.testing.assert_allclose(g, w, atol=1e-5)


def test_the_blend_refuses_other_networks_bad_files_and_weights(repo_root, tmp_path, capsys):
    from vl_distill_ros.config import ConfigError
    from vl_distill_ros.training.box_net_blend import blend_box_nets

    tool = load_script(repo_root / "tools" / "blend_box_nets.py")
    shipped = repo_root / "vl_distill_ros" / "bundles" / "box_net.onnx"
    int8 = repo_root / "vl_distill_ros" / "bundles" / "box_net_int8.onnx"
    student = tmp_path / "other.onnx"
    import onnx
    from onnx import helper, TensorProto
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])],
        [helper.make_tensor("w", TensorProto.FLOAT, [2, 3, 1, 1], [0.1] * 6),
         helper.make_tensor("b", TensorProto.FLOAT, [2], [0.0, 0.0])])
    onnx.save(helper.make_model(graph), str(student))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not onnx")
    out = tmp_path / "out.onnx"
    cases = [((shipped, student, 0.5), "not the same network"),
             ((shipped, int8, 0.5), "not a box_net.onnx export|no convolutions"),
             ((shipped, garbage, 0.5), "not an ONNX file"),
             ((shipped, tmp_path / "none.onnx", 0.5), "does not exist"),
             ((shipped, shipped, 1.5), "weight must be in"),
             ((shipped, shipped, float("nan")), "weight must be in")]
    for (first, second, weight), message in cases:
        with pytest.raises(ConfigError, match=message):
            blend_box_nets(first, second, weight, out)
        assert not out.exists()
    assert tool.main([str(shipped), str(garbage), "--weight", "0.5", "--out", str(out)]) == 2
    assert "not an ONNX file" in capsys.readouterr().err
    # --out a folder, or below a file: IsADirectoryError / FileExistsError tracebacks
    (tmp_path / "folder").mkdir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for bad, message in ((tmp_path / "folder", "is a folder"),
                         (blocker / "out.onnx", "cannot write")):
        assert tool.main([str(shipped), str(shipped), "--weight", "0.5", "--out",
                          str(bad)]) == 2
        assert message in capsys.readouterr().err
