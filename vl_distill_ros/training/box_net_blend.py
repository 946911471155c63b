"""Weight interpolation of two box networks (WiSE-FT for the box network).

Wortsman et al., "Robust fine-tuning of zero-shot models" (CVPR 2022), interpolate the
weights of a network and of its fine-tuned copy: ``(1 - weight) * first + weight * second``.
The fine-tuned copy starts from the first network, so the two lie in one basin and the
blend keeps much of what each knows. Here the two are ``box_net.onnx`` files that
:func:`.box_net.export_onnx` wrote (each batch norm folded into the convolution before it;
a stage trained from an ONNX file with ``freeze_batch_norm`` keeps that form), and the
blend is taken over every convolution's weight and bias, in the order the graph runs them.
The output keeps the first file's graph and metadata, so the node loads it as it loads the
shipped network (``proposal_box_net: PATH``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..atomic_io import atomic_write_bytes
from ..config import ConfigError
from .box_net import read_onnx


def _conv_tensors(proto: Any, path: str | Path) -> list[str]:
    """The names of the weight and bias initialisers of every convolution of ``proto``, in
    graph order."""
    names = {t.name for t in proto.graph.initializer}
    out: list[str] = []
    for node in proto.graph.node:
        if node.op_type != "Conv":
            continue
        if len(node.input) != 3 or not all(n in names for n in node.input[1:]):
            raise ConfigError(f"box net blend: {path} has a convolution without a stored "
                              "weight and bias (not a box_net.onnx export)")
        out.extend(node.input[1:])
    if not out:
        raise ConfigError(f"box net blend: {path} has no convolutions")
    return out


def blend_box_nets(first: str | Path, second: str | Path, weight: float,
                   out: str | Path) -> Path:
    """Write to ``out`` the box network whose convolutions are ``(1 - weight)`` times
    ``first``'s plus ``weight`` times ``second``'s; return ``out``.

    Raises:
        ConfigError: ``weight`` outside [0, 1], a missing or unreadable file, or two files
        that are not the same network (their convolutions differ in number or shape), or an
        ``out`` that is a folder or cannot be written (the file is written whole or not).
    """
    from onnx import numpy_helper

    if not 0.0 <= float(weight) <= 1.0:
        raise ConfigError(f"box net blend: weight must be in [0, 1], got {weight}")
    proto_a = read_onnx(first, f"box net blend: {first}")
    proto_b = read_onnx(second, f"box net blend: {second}")
    names_a, names_b = _conv_tensors(proto_a, first), _conv_tensors(proto_b, second)
    arrays_a = {t.name: numpy_helper.to_array(t) for t in proto_a.graph.initializer}
    arrays_b = {t.name: numpy_helper.to_array(t) for t in proto_b.graph.initializer}
    if len(names_a) != len(names_b) or any(
            arrays_a[a].shape != arrays_b[b].shape for a, b in zip(names_a, names_b)):
        raise ConfigError(f"box net blend: {first} and {second} are not the same network "
                          f"({len(names_a) // 2} and {len(names_b) // 2} convolutions, or "
                          "their shapes differ)")
    mixed = {a: ((1.0 - weight) * arrays_a[a].astype(np.float64)
                 + weight * arrays_b[b].astype(np.float64)).astype(arrays_a[a].dtype)
             for a, b in zip(names_a, names_b)}
    for tensor in proto_a.graph.initializer:
        if tensor.name in mixed:
            tensor.CopyFrom(numpy_helper.from_array(mixed[tensor.name], tensor.name))
    path = Path(out).expanduser()
    if path.is_dir():
        raise ConfigError(f"box net blend: --out {out} is a folder; name the .onnx file")
    try:    # whole or not at all: a cut file at --out would be read as a broken network
        return atomic_write_bytes(path, proto_a.SerializeToString())
    except OSError as exc:
        raise ConfigError(f"box net blend: cannot write {out}: {exc}") from None
