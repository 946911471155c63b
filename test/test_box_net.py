"""The learned box network: decoding, overlap suppression, the shipped model on rendered
frames, bad model files, and a short training run through ``vl-distill train-box-net``."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from vl_distill_ros.perception.box_net import (DEFAULT_BOX_NET, DEFAULT_BOX_NET_INT8, BoxNet,
                                               BoxNetError, decode_boxes, load_box_net,
                                               resolve_box_net, suppress_overlaps)
from vl_distill_ros.perception.boxes import box_iou
from vl_distill_ros.perception.proposals import propose_boxes
from vl_distill_ros.perception.proposal_config import ProposalConfig


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_decode_takes_local_maxima_above_the_threshold_with_their_sizes_and_offsets():
    heat = np.full((6, 8), _logit(0.01), np.float32)
    heat[2, 3] = _logit(0.9)      # a peak
    heat[2, 4] = _logit(0.6)      # its neighbour: not a local maximum
    heat[5, 7] = _logit(0.4)      # a weaker peak
    size = np.zeros((2, 6, 8), np.float32)
    size[:, 2, 3] = [math.log(4.0), math.log(2.0)]  # 4 x 2 cells
    offset = np.zeros((2, 6, 8), np.float32)       # logit 0: the cell's middle
    boxes, scores = decode_boxes(heat, size, offset, stride=8, scale=0.5, threshold=0.3)
    assert scores.tolist() == pytest.approx([0.9, 0.4], abs=1e-6)
    # centre (3.5, 2.5) cells * 8 px / 0.5 = (56, 40) frame px; size 4 x 2 cells = 64 x 32
    assert boxes[0].tolist() == pytest.approx([24.0, 24.0, 64.0, 32.0], abs=1e-4)
    high, _ = decode_boxes(heat, size, offset, stride=8, scale=0.5, threshold=0.5)
    assert len(high) == 1


def test_overlap_suppression_by_iou_and_by_containment():
    boxes = np.array([[0, 0, 100, 100], [5, 5, 100, 100], [200, 0, 50, 50], [210, 10, 20, 20]],
                     float)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    assert sorted(suppress_overlaps(boxes, scores, iou=0.5).tolist()) == [0, 2, 3]
    # the small box 3 lies wholly inside box 2, which scores lower: box 2 holds it, stays
    assert sorted(suppress_overlaps(boxes, scores, iou=0.5, containment=0.9).tolist()) == [0, 2, 3]
    # the small box inside a better box goes, unless its own score reaches keep_inside_score
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert sorted(suppress_overlaps(boxes, scores, iou=0.5, containment=0.9).tolist()) == [0, 2]
    kept = suppress_overlaps(boxes, scores, iou=0.5, containment=0.9, keep_inside_score=0.6)
    assert sorted(kept.tolist()) == [0, 2, 3]
    kept = suppress_overlaps(boxes, scores, iou=0.5, containment=0.9, keep_inside_score=0.61)
    assert sorted(kept.tolist()) == [0, 2]


def test_resolve_names():
    assert resolve_box_net("default") == DEFAULT_BOX_NET
    assert resolve_box_net(" default_int8 ") == DEFAULT_BOX_NET_INT8
    assert resolve_box_net("off") is None and resolve_box_net("") is None
    assert str(resolve_box_net("/x/y.onnx")) == "/x/y.onnx"


def _sample_frames(repo_root, count):
    from vl_distill_ros.bags.bag_io import read_camera_bag

    contents = read_camera_bag(repo_root / "demo" / "sample_tabletop")
    frames = []
    for msg in contents.images():
        objs = contents.objects_for(msg.topic, msg.stamp_ns)
        if objs:
            frames.append((msg.image, [o.bbox for o in objs]))
        if len(frames) == count:
            break
    return frames


def test_the_shipped_network_finds_the_objects_of_rendered_frames(repo_root):
    """The sample bag (rendered YCB tables, seed 0, not a training bag): most objects found
    at IoU 0.5 with few false boxes; an empty table gives nothing."""
    from vl_distill_ros.evaluation.scoring import match_boxes

    net = load_box_net(DEFAULT_BOX_NET)
    assert load_box_net(DEFAULT_BOX_NET) is net  # loaded once
    objects = matched = proposed = 0
    for image, truth in _sample_frames(repo_root, 12):
        boxes, scores = net.detect(image, threshold=0.3)
        assert (np.diff(scores) <= 0).all() and ((scores > 0.3) & (scores <= 1)).all()
        objects += len(truth)
        matched += len(match_boxes(truth, boxes.tolist(), 0.5))
        proposed += len(boxes)
    assert matched >= 0.8 * objects, (matched, objects)
    assert proposed - matched <= 0.5 * 12, proposed - matched
    table = np.full((480, 640, 3), (168, 138, 108), np.uint8)
    assert len(net.detect(table, threshold=0.3)[0]) == 0
    # a frame far taller than wide is fed at a bounded height; boxes stay in the frame
    tall = np.repeat(image[:, :40], 40, axis=0)
    x, scale = net.network_input(tall, 320)
    assert x.shape[2] <= 1280 + 15 and scale == pytest.approx(1280 / tall.shape[0])
    boxes, _ = net.detect(tall, threshold=0.3)
    assert ((boxes[:, 0] + boxes[:, 2] <= 40 + 1e-6) & (boxes[:, 1] >= 0)).all()


def _close_ups(repo_root, count):
    """Close-ups cut from the sample bag's frames: a 4:3 window around one ground-truth
    object that it fills to 70% of the window's longer side, scaled to 640 pixels wide (as a
    wrist camera sees an object before a grasp), with that object's box."""
    import cv2

    out = []
    for image, truth in _sample_frames(repo_root, 60):
        for x, y, w, h in truth:
            if w * h < 2500:
                continue
            cw = max(w / 0.7, h / 0.7 * 4 / 3)
            x0, y0 = int(x + w / 2 - cw / 2), int(y + h / 2 - cw * 3 / 8)
            if x0 < 0 or y0 < 0 or x0 + cw > image.shape[1] or y0 + cw * 3 / 4 > image.shape[0]:
                continue
            crop = image[y0:int(y0 + cw * 3 / 4), x0:int(x0 + cw)]
            s = 640 / crop.shape[1]
            frame = cv2.resize(crop, (640, int(round(crop.shape[0] * s))),
                               interpolation=cv2.INTER_LINEAR)
            out.append((frame, [((x - x0) * s, (y - y0) * s, w * s, h * s)]))
            if len(out) == count:
                return out
    return out


def test_the_close_pass_boxes_an_object_that_fills_the_frame_whole(repo_root):
    """An object close to the camera fills much of the frame: the 480-pixel pass sees it
    larger than the training zooms and boxes parts of it; the close pass (240 pixels)
    boxes it whole, and a table frame of small objects does not run it."""
    from vl_distill_ros.evaluation.scoring import match_boxes

    net = load_box_net(DEFAULT_BOX_NET)
    close_ups = _close_ups(repo_root, 40)
    assert len(close_ups) >= 30
    found = {0: 0, 240: 0}
    for frame, truth in close_ups:
        for width in found:
            boxes, _ = net.detect(frame, 0.3, (480,), close_width=width)
            found[width] += len(match_boxes(truth, boxes.tolist(), 0.5))
    assert found[240] >= 0.85 * len(close_ups), found
    assert found[240] - found[0] >= 0.3 * len(close_ups), found
    calls = []
    real = net._pass

    def counting(image, width, threshold):
        calls.append(width)
        return real(image, width, threshold)

    net._pass = counting
    try:
        image, _ = min(_sample_frames(repo_root, 60),   # the smallest objects on a table
                       key=lambda frame: max(max(w, h) for _, _, w, h in frame[1]))
        net.detect(image, 0.3, (480,), close_width=240)
    finally:
        del net._pass
    assert calls == [480]


def test_close_pass_keeps_the_first_pass_s_small_boxes_and_drops_its_parts(monkeypatch):
    """The close pass's rules on canned passes: it runs when a first-pass box is 2/3 of
    ``close_min_px`` long; its long boxes replace the first pass's long ones they overlap
    (IoU 0.3), and a long first-pass box that no close box covers stays; a first-pass
    box 70% inside a close box is dropped when it scores lower and is a tenth of its area
    or more, or smaller and not found by the close pass (IoU 0.3 with any of its boxes, long
    or not): a part; kept when it scores higher, or is smaller and the close pass finds it
    too (another object)."""
    net = load_box_net(DEFAULT_BOX_NET)
    first = (np.array([[10, 10, 40, 40], [100, 100, 80, 80], [300, 200, 20, 20],
                       [80, 80, 240, 200], [200, 200, 20, 20], [400, 20, 200, 60],
                       [150, 120, 20, 20]], float),
             np.array([0.9, 0.4, 0.8, 0.35, 0.5, 0.6, 0.5]), 1.0)
    close = (np.array([[90, 90, 200, 160], [400, 300, 20, 20], [198, 198, 22, 22]], float),
             np.array([0.7, 0.9, 0.6]), 0.5)
    passes = {480: first, 240: close}
    monkeypatch.setattr(type(net), "_pass", lambda self, image, width, threshold: passes[width])
    image = np.zeros((480, 640, 3), np.uint8)

    def kept(**kwargs) -> set:
        boxes, _ = net.detect(image, 0.3, (480,), close_width=240, close_min_px=150,
                              containment=1.1, nms_iou=1.1, **kwargs)
        return set(map(tuple, boxes.tolist()))

    # the 240-pixel first-pass box is replaced (IoU 0.67 with the close box); the 200-pixel
    # one far from it stays (the close pass missed that object); the 80-pixel box inside
    # the close box (scored 0.4 < 0.7, a fifth of its area) is its part; of the 20-pixel
    # boxes inside it, the one the close pass finds too is another object, the other a part;
    # the 20- and 22-pixel close boxes are not long enough to count
    assert kept() == {(10, 10, 40, 40), (300, 200, 20, 20), (200, 200, 20, 20),
                      (400, 20, 200, 60), (90, 90, 200, 160)}
    close[0][2] = (400, 400, 22, 22)   # the close pass no longer finds it: a part
    assert (200, 200, 20, 20) not in kept()
    close[0][2] = (198, 198, 22, 22)
    first[1][1] = 0.95   # a better-scored box inside stays (an object before another)
    assert (100, 100, 80, 80) in kept()
    passes[480] = (first[0][:3], first[1][:3], 1.0)   # all short of 100: no close pass
    passes.pop(240)
    assert len(kept()) == 3


def test_the_network_runs_on_the_threads_asked_for_and_finds_the_same_boxes(repo_root):
    """``load_box_net(path, threads)``: one session per thread count, run on that many
    ONNX Runtime threads; the boxes do not depend on it."""
    one, two = load_box_net(DEFAULT_BOX_NET, 1), load_box_net(DEFAULT_BOX_NET, 2)
    assert one is not two and load_box_net(DEFAULT_BOX_NET, 2) is two
    assert one.session.get_session_options().intra_op_num_threads == 1
    assert two.session.get_session_options().intra_op_num_threads == 2
    image, _ = next(iter(_sample_frames(repo_root, 1)))
    boxes_one, scores_one = one.detect(image, threshold=0.3)
    boxes_two, scores_two = two.detect(image, threshold=0.3)
    assert len(boxes_one) > 0
    np.testing.assert_allclose(boxes_two, boxes_one, atol=1e-3)
    np.testing.assert_allclose(scores_two, scores_one, atol=1e-5)


def _is_int8(path) -> bool:
    import onnx

    model = onnx.load(str(path))
    ops = {n.op_type for n in model.graph.node}
    weights = {i.data_type for i in model.graph.initializer}
    return "DequantizeLinear" in ops and onnx.TensorProto.INT8 in weights


def test_the_shipped_int8_copy_finds_what_the_float_network_finds(repo_root):
    """``default_int8``: a quantised copy of the shipped network (INT8 weights), which finds
    the sample bag's objects and nearly the float network's boxes, with close scores."""
    from vl_distill_ros.evaluation.scoring import match_boxes

    assert _is_int8(DEFAULT_BOX_NET_INT8) and not _is_int8(DEFAULT_BOX_NET)
    fp32, int8 = load_box_net(DEFAULT_BOX_NET), load_box_net(DEFAULT_BOX_NET_INT8)
    objects = matched = same = total = 0
    for image, truth in _sample_frames(repo_root, 12):
        a, sa = fp32.detect(image, 0.3, (480,))
        b, sb = int8.detect(image, 0.3, (480,))
        objects += len(truth)
        matched += len(match_boxes(truth, b.tolist(), 0.5))
        pairs = match_boxes(a.tolist(), b.tolist(), 0.5)
        same += len(pairs)
        total += max(len(a), len(b))
        for i, j, _ in pairs:
            assert abs(sa[i] - sb[j]) < 0.15
    assert matched >= 0.8 * objects, (matched, objects)
    assert same >= 0.9 * total, (same, total)
    cfg = ProposalConfig(box_net="default_int8")
    assert propose_boxes(_sample_frames(repo_root, 1)[0][0], cfg)


def test_quantize_box_net_calibrates_checks_and_refuses_bad_frames(repo_root):
    import onnx

    from vl_distill_ros.training.quantize import first_convolutions, quantize_box_net

    frames = [image for image, _ in _sample_frames(repo_root, 6)]
    model, parity = quantize_box_net(DEFAULT_BOX_NET.read_bytes(), frames, 320)
    net = BoxNet(model)
    assert net.stride == 8 and len(net.detect(frames[1], 0.3, (320,))[0]) > 0
    assert parity.calibration_frames == 3 and parity.frames == 3
    assert parity.input_width == 320 and parity.float_boxes > 0
    assert parity.matched_boxes >= 0.8 * parity.float_boxes
    assert 0 <= parity.mean_score_difference < 0.1 and parity.float_nodes == ()
    # the first convolutions can stay in float32 (int8_float_convs); the rest is quantised
    model3, parity3 = quantize_box_net(DEFAULT_BOX_NET.read_bytes(), frames, 320, float_convs=3)
    assert parity3.float_nodes == tuple(first_convolutions(DEFAULT_BOX_NET.read_bytes(), 3))
    graph = onnx.load_from_string(model3).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    weights = {n.name: n.input[1] in dequantized for n in graph.node if n.op_type == "Conv"}
    assert [weights[name] for name in parity3.float_nodes] == [False] * 3
    assert sum(weights.values()) == len(weights) - 3
    assert parity3.matched_boxes >= 0.8 * parity3.float_boxes
    with pytest.raises(ValueError, match="at least 2"):
        quantize_box_net(DEFAULT_BOX_NET.read_bytes(), frames[:1])
    with pytest.raises(ValueError, match="differ in size"):
        quantize_box_net(DEFAULT_BOX_NET.read_bytes(), [frames[0], frames[1][:100]])


def test_propose_boxes_uses_the_network_unless_turned_off(repo_root):
    image, truth = _sample_frames(repo_root, 1)[0]
    learned = propose_boxes(image, ProposalConfig(pad_frac=0.0))
    colour = propose_boxes(image, ProposalConfig(pad_frac=0.0, box_net="off"))
    assert learned != colour
    assert colour == propose_boxes(image, ProposalConfig(pad_frac=0.0), learned=False)
    assert all(any(box_iou(t, b) >= 0.5 for b in learned) for t in truth)


def test_the_colour_model_adds_boxes_apart_from_the_network_s_never_its_parts():
    """``box_net_colour: apart``: a colour-model box joins the network's when it overlaps
    none of them (IoU under ``APART_IOU``) and lies less than ``APART_INSIDE`` inside each
    (a box inside one is a part of the object the network found)."""
    from vl_distill_ros.perception.proposals import (APART_INSIDE, APART_IOU,
                                                     with_colour_model)

    image = np.zeros((480, 640, 3), np.uint8)
    network = [(100, 100, 200, 200)]
    label = (150, 150, 30, 30)            # inside the network's box: a part
    edge = (80, 80, 60, 60)               # 0.44 of it inside, IoU 0.04: apart
    beside = (400, 300, 50, 50)           # nowhere near
    touching = (90, 100, 120, 120)        # IoU 0.32 with the network's box
    assert APART_INSIDE <= 0.9 and box_iou(label, network[0]) < APART_IOU
    out, net = with_colour_model(image, network, ProposalConfig(),
                                 colour=[label, edge, beside, touching])
    assert net == network
    assert sorted(out) == sorted([network[0], edge, beside])
    # without the network the colour model's boxes are the proposals, the part included
    alone, none = with_colour_model(image, None, ProposalConfig(), colour=[label, beside])
    assert sorted(alone) == sorted([label, beside]) and none == []
    # box_net_colour: none keeps the network's boxes alone
    only, _ = with_colour_model(image, network, ProposalConfig(box_net_colour="none"),
                                colour=[label, beside])
    assert only == network


def test_long_thin_colour_boxes_join_the_network_s_only_at_the_frame_border():
    """``apart_max_aspect``: a colour-model box beside the network's that is more than that
    many times as long as wide (a shadow, a table edge) is left out, unless it reaches the
    frame's border (what the border leaves of a cut object); the colour model alone, or
    the setting at 0, keeps it (``max_aspect`` still applies)."""
    import dataclasses

    from vl_distill_ros.perception.proposals import APART_BORDER_PX, with_colour_model

    image = np.zeros((480, 640, 3), np.uint8)
    network = [(100, 100, 200, 200)]
    cfg = ProposalConfig()
    assert cfg.apart_max_aspect == 4.0
    sliver = (400, 300, 120, 20)          # 6 times as long as wide, inside the frame
    square = (400, 100, 50, 50)
    stubby = (400, 200, 80, 20)           # 4 times: still joins
    cut = (640 - 25, 300, 25, 150)        # 6 times, at the right edge
    top = (420, APART_BORDER_PX, 150, 12)  # at the top edge
    colour = [sliver, square, stubby, cut, top]
    out, _ = with_colour_model(image, network, cfg, colour=colour)
    assert sorted(out) == sorted([network[0], square, stubby, cut, top])
    off, _ = with_colour_model(image, network, dataclasses.replace(cfg, apart_max_aspect=0),
                               colour=colour)
    assert sliver in off
    alone, _ = with_colour_model(image, None, cfg, colour=colour)
    assert sorted(alone) == sorted(colour)
    with pytest.raises(ValueError, match="apart_max_aspect"):
        ProposalConfig(apart_max_aspect=0.5)


def test_colour_parts_of_the_network_s_objects_are_left_out_of_rendered_frames(repo_root):
    """On the sample bag's frames the colour model boxes parts of objects the network found
    (a printed face, a small patch); none of them is proposed, its other boxes apart from the
    network's are, and every object the network or the colour model finds is still found."""
    from vl_distill_ros.perception.boxes import box_containment
    from vl_distill_ros.perception.proposals import (APART_INSIDE, APART_IOU, _apart_shape,
                                                     colour_model_boxes, network_detections,
                                                     with_colour_model)

    cfg = ProposalConfig()
    parts = 0
    for image, truth in _sample_frames(repo_root, 60):
        network = network_detections(image, cfg).boxes
        colour = colour_model_boxes(image, cfg)
        out, _ = with_colour_model(image, network, cfg, colour=colour)
        apart = [c for c in colour if all(box_iou(c, b) < APART_IOU for b in network)]
        inside = [c for c in apart if any(box_containment(c, b) >= APART_INSIDE
                                          for b in network)]
        parts += len(inside)
        assert not set(inside) & set(out)
        height, width = image.shape[:2]
        shaped = {c for c in apart if _apart_shape(c, width, height, cfg.apart_max_aspect)}
        assert shaped - set(inside) <= set(out)
        assert not (set(apart) - shaped) & set(out)
        for t in truth:   # the parts left out found no object
            if any(box_iou(t, c) >= 0.5 for c in inside):
                assert any(box_iou(t, b) >= 0.5 for b in out)
    assert parts >= 2


def test_network_detections_split_the_boxes_at_the_threshold_from_one_run(repo_root):
    """``network_detections(..., weak_threshold)``: the boxes are exactly those of
    ``network_boxes`` (a weaker box never suppresses a better one), the weak ones are the
    boxes the network finds at the weak threshold that it does not find at its own (scored
    in between); without a weak threshold there are none, and with the network off None."""
    import dataclasses

    from vl_distill_ros.perception.proposals import network_boxes, network_detections

    cfg = ProposalConfig()
    weak_total = 0
    for image, _ in _sample_frames(repo_root, 6):
        found = network_detections(image, cfg, 0.1)
        assert found.boxes == network_boxes(image, cfg)
        low = network_boxes(image, dataclasses.replace(cfg, box_net_threshold=0.1, max_count=20))
        assert set(found.boxes) | set(found.weak) <= set(low)
        assert not set(found.boxes) & set(found.weak)
        weak_total += len(found.weak)
        assert network_detections(image, cfg).weak == []
        assert network_detections(image, cfg, 0.5).weak == []   # above the threshold: none
    assert weak_total > 0
    assert network_detections(image, dataclasses.replace(cfg, box_net="off"), 0.1) is None


def test_bad_box_network_settings_and_files(tmp_path):
    with pytest.raises(ValueError, match="no model file"):
        ProposalConfig(box_net=str(tmp_path / "missing.onnx"))
    with pytest.raises(ValueError, match="box_net_threshold"):
        ProposalConfig(box_net_threshold=1.0)
    with pytest.raises(ValueError, match="box_net_input_width"):
        ProposalConfig(box_net_input_width=5000)
    with pytest.raises(ValueError, match="box_net_colour"):
        ProposalConfig(box_net_colour="both")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(BoxNetError, match="cannot load"):
        BoxNet(junk)
    with pytest.raises(BoxNetError, match="input width"):
        load_box_net(DEFAULT_BOX_NET).detect(np.zeros((48, 64, 3), np.uint8), 0.3,
                                             input_widths=(320, 4000))
    with pytest.raises(ValueError, match="box_net_second_width"):
        ProposalConfig(box_net_second_width=20)


def test_an_onnx_model_that_is_not_a_box_network_is_refused(tmp_path):
    import torch

    path = tmp_path / "other.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 1, 1), torch.zeros(1, 3, 32, 32), str(path),
                      input_names=["image"], output_names=["heatmap"], dynamo=False)
    with pytest.raises(BoxNetError, match="not a box network"):
        BoxNet(path)


def test_targets_and_placement():
    from vl_distill_ros.training.box_net import place, targets

    heat, size, offset, mask, weight = targets(np.array([[16.0, 8.0, 48.0, 24.0]]), 64, 32)
    assert heat.shape == (4, 8) and mask.sum() == 1 and heat[2, 4] == 1.0 and mask[2, 4] == 1
    assert size[:, 2, 4].tolist() == pytest.approx([math.log(4.0), math.log(2.0)])
    assert offset[:, 2, 4].tolist() == pytest.approx([0.0, 0.0])
    assert np.array_equal(weight, mask)  # CenterNet: the size is trained at the centre only
    # TTFNet's size region: the Gaussian's cells around the centre, the same size written
    # there, weights summing to 1 per object; the smaller of two objects wins shared cells.
    two = np.array([[0.0, 0.0, 64.0, 32.0], [40.0, 8.0, 56.0, 24.0]])
    heat, size, offset, mask, weight = targets(two, 64, 32, size_region=True)
    assert mask.sum() == 2 and (weight > 0).sum() > 2
    small = np.isclose(size[0], math.log(2.0)) & (weight > 0)
    assert small.any() and weight[small].sum() == pytest.approx(1.0)
    assert weight[2, 6] == weight[small].max()  # the small box's centre cell
    assert 0 < weight[~small].sum() < 1.0  # the large box lost the cells the small one holds
    assert np.allclose(size[0][(weight > 0) & ~small], math.log(8.0))
    rng = np.random.default_rng(0)
    img = np.zeros((40, 80, 3), np.uint8)
    boxes = np.array([[0.0, 0.0, 10.0, 10.0], [30.0, 10.0, 50.0, 30.0]], np.float32)
    canvas, kept = place(img, boxes, (80, 40), 2.0, rng, min_visible=0.4)
    assert canvas.shape == (40, 80, 3)
    for b in kept:  # every kept box lies in the canvas and is not empty
        assert 0 <= b[0] < b[2] <= 80 and 0 <= b[1] < b[3] <= 40


def test_training_bag_recipe_draws_far_views_for_the_last_bags(repo_root, tmp_path,
                                                               monkeypatch):
    """``tools/make_box_net_bags.py``: each bag's settings come from its seed alone; the
    bags from ``FAR_FROM`` on are far views; the split's OOD objects are never rendered."""
    import yaml

    from helpers import load_script

    tool = load_script(repo_root / "tools" / "make_box_net_bags.py")

    def option(args: list[str], name: str) -> str:
        return args[args.index(name) + 1]

    near = [tool.bag_args(i, tmp_path, ["a"]) for i in range(tool.FAR_FROM)]
    far = [tool.bag_args(i, tmp_path, ["a"]) for i in range(tool.FAR_FROM, tool.FAR_FROM + 30)]
    assert tool.bag_args(7, tmp_path, ["a"]) == near[7]
    assert {option(a, "--camera-distance") for a in far} == {"1.2,2.2"}
    assert "1.2,2.2" not in {option(a, "--camera-distance") for a in near}
    assert len({option(a, "--seed") for a in near + far}) == tool.FAR_FROM + 30
    assert not any(a.startswith("--roll") for a in sum(near + far, []))
    rolled = [tool.bag_args(i, tmp_path, ["a"]) for i in range(tool.ROLL_FROM,
                                                               tool.ROLL_FROM + 40)]
    rolls = [next(a for a in args if a.startswith("--roll=")) for args in rolled]
    assert set(rolls) == {f"--roll={r}" for r in tool.ROLL_CHOICES}
    assert "1.2,2.2" not in {option(a, "--camera-distance") for a in rolled}
    assert not {option(a, "--seed") for a in rolled} & {option(a, "--seed") for a in near + far}
    clutter = [tool.bag_args(i, tmp_path, ["a"]) for i in range(tool.CLUTTER_FROM,
                                                                tool.CLUTTER_FROM + 30)]
    assert {option(a, "--table-size") for a in clutter} == {"0.4,0.7"}
    assert {option(a, "--camera-distance") for a in clutter} <= \
        set(tool.CLUTTER_CHOICES["--camera-distance"])
    assert {next(a for a in args if a.startswith("--elevation=")) for args in clutter} == \
        {f"--elevation={e}" for e in tool.CLUTTER_ELEVATION}
    assert not any(a.startswith(("--roll", "--cut-border")) for a in sum(clutter, []))
    assert option(clutter[0], "--seed") == "3210"
    busy = [tool.bag_args(i, tmp_path, ["a"]) for i in range(tool.BUSY_FROM, tool.BUSY_FROM + 40)]
    assert {option(a, "--table-kinds") for a in busy} == {tool.BUSY_TABLE_KINDS}
    assert option(busy[0], "--seed") == "3240"
    assert {option(a, "--contact-prob") for a in busy} <= \
        {str(v) for v in tool.BUSY_CHOICES["--contact-prob"]}
    assert not any("--table-kinds" in a for a in near + far + rolled + clutter)
    close = [tool.bag_args(i, tmp_path, ["a"]) for i in range(tool.CLOSE_FROM,
                                                              tool.CLOSE_FROM + 30)]
    assert option(close[0], "--seed") == "3340"
    assert all("--keep-distance" in a for a in close)
    assert not any("--keep-distance" in a for a in near + far + rolled + clutter + busy)
    assert {option(a, "--fov-y") for a in close} == set(tool.CLOSE_CHOICES["--fov-y"])
    assert {next(a for a in args if a.startswith("--roll=")) for args in close} == \
        {f"--roll={r}" for r in tool.CLOSE_ROLL}
    assert not any("--table-kinds" in a or a.startswith("--elevation") for a in sum(close, []))
    seeds = [option(a, "--seed") for a in near + far + rolled + clutter + busy + close]
    assert len(set(seeds)) == len(seeds)
    split = yaml.safe_load((repo_root / "config/splits/ycb_paper.yaml").read_text())
    models = repo_root.parent / "shared" / "ycb_models"
    if models.is_dir():
        objects = tool.training_objects(str(models))
        assert objects and not set(objects) & set(split["out_of_distribution"])
    # a count past its kind's index range made bags of the next kind (--rolled 41: the
    # 41st "rolled" bag was a cut-border one)
    import vl_distill_ros.cli

    def no_rendering(argv):
        raise AssertionError(f"rendered a bag: {argv[:3]}")
    monkeypatch.setattr(vl_distill_ros.cli, "main", no_rendering)
    for option_name, count in (("--count", 131), ("--rolled", 41), ("--cut-border", 41),
                               ("--clutter", 31), ("--busy", tool.MAX_BUSY + 1),
                               ("--close", -1), ("--close", tool.MAX_CLOSE + 1)):
        with pytest.raises(SystemExit):
            tool.main([str(tmp_path / "bags"), option_name, str(count)])
    assert not (tmp_path / "bags").exists()


def test_train_box_net_end_to_end_writes_a_loadable_network(repo_root, tmp_path, capsys):
    """Two steps from scratch on the sample bag, through the CLI: the ONNX file loads as a
    box network, the log and the curves are written; bad configs exit 2."""
    from vl_distill_ros.cli import main

    out = tmp_path / "run"
    rc = main(["train-box-net", "--config", str(repo_root / "config" / "train_box_net.yaml"),
               "--out", str(out), "--no-progress",
               f"bags=[{repo_root / 'demo' / 'sample_tabletop'}]", "iterations=2",
               "batch_size=2", "pretrained=none", "log_every=1", "threads=1", "int8_frames=4",
               "int8_input_width=320"])
    assert rc == 0
    net = BoxNet(out / "box_net.onnx")
    assert net.stride == 8
    assert _is_int8(out / "box_net_int8.onnx") and BoxNet(out / "box_net_int8.onnx").stride == 8
    parity = json.loads((out / "box_net_int8.json").read_text())
    assert parity["calibration_frames"] == 2 and parity["input_width"] == 320
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all(np.isfinite(r["loss"]) for r in rows)
    assert (out / "training_curves.png").stat().st_size > 0
    described = (out / "config.json").read_bytes()
    for bad in ([f"bags=[{tmp_path / 'nothing*'}]"], ["seed=-1"], ["iterations=["]):
        rc = main(["train-box-net", "--out", str(out), "--no-progress",
                   "--config", str(repo_root / "config" / "train_box_net.yaml"), *bad])
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err, (bad, err)
    assert "no bag matches" in err or "not valid YAML" in err
    # a run that failed on its inputs left the earlier model's config.json as it was
    assert (out / "config.json").read_bytes() == described
    rc = main(["train-box-net", "--out", str(tmp_path / "bad"), "--no-progress",
               "--config", str(repo_root / "config" / "train_box_net.yaml"),
               f"bags=[{repo_root / 'demo' / 'sample_tabletop'}]", "int8_frames=5000"])
    assert rc == 2 and "invalid int8_frames" in capsys.readouterr().err

    # fine-tuning (the second stage's config): starts from the first run's weights
    import torch

    from vl_distill_ros.training.box_net import BoxNetModel, load_state

    tuned = tmp_path / "tuned"

    def finetune(out_dir, *overrides: str) -> int:
        return main(["train-box-net", "--config",
                     str(repo_root / "config" / "train_box_net_finetune.yaml"), "--no-progress",
                     "--out", str(out_dir), f"bags=[{repo_root / 'demo' / 'sample_tabletop'}]",
                     "batch_size=2", "threads=1", "int8_frames=0", *overrides])

    assert finetune(tuned, f"init_from={out / 'box_net.pt'}", "iterations=1", "lr=0.000001",
                    "weight_decay=0") == 0
    first = torch.load(out / "box_net.pt", weights_only=True)
    second = torch.load(tuned / "box_net.pt", weights_only=True)
    key = "heatmap.weight"  # one tiny step away from the first run's, not from scratch
    assert torch.allclose(first[key], second[key], atol=1e-4)
    model = BoxNetModel(pretrained=False)
    load_state(model, out / "box_net.pt")
    assert torch.equal(model.state_dict()[key], first[key])
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a state dict")
    assert finetune(tmp_path / "bad2", f"init_from={bad}") == 2
    assert "is not a box network's state dict" in capsys.readouterr().err
    assert finetune(tmp_path / "bad3", f"init_from={tmp_path / 'none.pt'}") == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tuned / "box_net_int8.onnx").exists()   # int8_frames=0: no copy

    # --quantize: the INT8 copy of an existing network alone, no training
    def quantize(model, out_dir) -> int:
        return main(["train-box-net", "--quantize", str(model), "--out", str(out_dir),
                     "--no-progress", f"bags=[{repo_root / 'demo' / 'sample_tabletop'}]",
                     "int8_frames=4"])

    assert quantize(DEFAULT_BOX_NET, tmp_path / "q") == 0
    assert _is_int8(tmp_path / "q" / "box_net_int8.onnx")
    assert not (tmp_path / "q" / "box_net.pt").exists()
    assert quantize(bad, tmp_path / "q2") == 2
    assert "cannot load the box network" in capsys.readouterr().err


def test_a_network_starts_from_its_onnx_export_with_batch_norms_folded(repo_root, tmp_path,
                                                                       capsys):
    """``init_from: box_net.onnx``: the export's folded weights load into the network (its
    outputs reproduced: checked inside and here), they fine-tune with the batch norms'
    statistics frozen, and a file that is not this network's, or no ``freeze_batch_norm``,
    is refused."""
    import torch

    from vl_distill_ros.cli import main
    from vl_distill_ros.config import ConfigError
    from vl_distill_ros.training.box_net import (BoxNetModel, BoxNetTrainConfig,
                                                 export_onnx, load_onnx_weights)

    torch.manual_seed(0)
    source = BoxNetModel(pretrained=False)
    with torch.no_grad():   # statistics far from 0 and 1: the folding has work to do
        for m in source.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    path = export_onnx(source, tmp_path / "box_net.onnx")
    model = BoxNetModel(pretrained=False)
    load_onnx_weights(model, path)
    x = torch.rand(1, 3, 96, 128) * 2 - 1
    with torch.no_grad():
        for a, b in zip(source.eval()(x), model.eval()(x)):
            assert torch.allclose(a, b, atol=1e-4)
    norm = model.head[1]
    assert torch.all(norm.running_mean == 0) and torch.all(norm.weight == 1)
    assert not torch.all(norm.bias == 0)

    def tune(out_dir, *overrides: str) -> int:
        return main(["train-box-net", "--config",
                     str(repo_root / "config" / "train_box_net_roll.yaml"), "--no-progress",
                     "--out", str(out_dir), f"bags=[{repo_root / 'demo' / 'sample_tabletop'}]",
                     "batch_size=2", "threads=1", "int8_frames=0", "iterations=2", *overrides])

    assert tune(tmp_path / "tuned", f"init_from={path}") == 0
    state = torch.load(tmp_path / "tuned" / "box_net.pt", weights_only=True)
    assert torch.all(state["head.1.running_mean"] == 0)            # frozen statistics
    assert torch.allclose(state["head.1.running_var"], torch.full((64,), 1 - norm.eps))
    assert not torch.equal(state["heatmap.weight"], model.state_dict()["heatmap.weight"])
    BoxNet(tmp_path / "tuned" / "box_net.onnx")
    with pytest.raises(ConfigError, match="freeze_batch_norm"):
        BoxNetTrainConfig(init_from=str(path))
    assert tune(tmp_path / "bad", f"init_from={path}", "freeze_batch_norm=false") == 2
    assert "freeze_batch_norm" in capsys.readouterr().err
    other = tmp_path / "other.onnx"
    other.write_bytes(b"not onnx")
    with pytest.raises(ConfigError, match="not an ONNX file"):
        load_onnx_weights(BoxNetModel(pretrained=False), other)
    with pytest.raises(ConfigError, match="does not exist"):
        load_onnx_weights(BoxNetModel(pretrained=False), tmp_path / "none.onnx")
    int8 = repo_root / "vl_distill_ros" / "bundles" / "box_net_int8.onnx"
    with pytest.raises(ConfigError, match="not this box network"):
        load_onnx_weights(BoxNetModel(pretrained=False), int8)


def test_motion_blur_smears_along_its_direction_only():
    """The training's motion blur: a normalised line kernel that smears across edges in its
    direction and leaves edges along it; drawn with probability 1 it changes the image."""
    from vl_distill_ros.training.box_net import motion_kernel, photometric

    k = motion_kernel(9, 0.0)
    assert k.sum() == pytest.approx(1.0) and k[4].sum() == pytest.approx(1.0)
    import cv2

    stripes = np.zeros((40, 40), np.float32)
    stripes[::8] = 1.0  # horizontal lines: a horizontal blur leaves them, a vertical one not
    assert np.abs(cv2.filter2D(stripes, -1, k) - stripes).max() < 1e-5
    assert np.abs(cv2.filter2D(stripes, -1, motion_kernel(9, 90.0)) - stripes).max() > 0.5
    img = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    plain = photometric(img, np.random.default_rng(5))
    assert not np.array_equal(plain, photometric(img, np.random.default_rng(5), 1.0))


def test_sensor_ranges_of_the_training_augmentation():
    """``exposure_min/max``, ``noise_max_sigma`` and ``jpeg_min_quality`` reach the images
    (a dark range darkens, a noisy one adds noise) and are checked when read."""
    from vl_distill_ros.config import ConfigError
    from vl_distill_ros.training.box_net import BoxNetTrainConfig, photometric

    img = np.full((48, 64, 3), 128, np.uint8)

    def mean_of(**kw):
        return np.mean([photometric(img, np.random.default_rng(s), **kw).mean()
                        for s in range(12)])

    assert mean_of(exposure=(0.3, 0.3)) < 0.6 * mean_of(exposure=(1.0, 1.0))

    def noise_of(sigma):
        out = [photometric(img, np.random.default_rng(s), noise_max_sigma=sigma,
                           defocus_max_sigma=0.3) for s in range(12)]
        return np.mean([o.astype(float).std(axis=(0, 1)).mean() for o in out])

    assert noise_of(30.0) > 2 * noise_of(0.0)
    cfg = BoxNetTrainConfig(exposure_min=0.35, exposure_max=2.0, noise_max_sigma=12,
                            jpeg_min_quality=12)
    assert (cfg.exposure_min, cfg.noise_max_sigma, cfg.jpeg_min_quality) == (0.35, 12, 12)
    for bad in ({"exposure_min": 1.5, "exposure_max": 1.2}, {"noise_max_sigma": -1},
                {"jpeg_min_quality": 95}, {"jpeg_min_quality": 2}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            BoxNetTrainConfig(**bad)


def test_the_node_parameters_choose_and_check_the_network(tmp_path):
    """``proposal_box_net`` / ``proposal_box_net_threshold`` by the node's rule
    (``PipelineSettings.from_params``): the shipped network by default, off, another file;
    a missing or broken file is refused when set, not on the next frame."""
    from vl_distill_ros.evaluation import replay
    from vl_distill_ros.perception.pipeline import PipelineError, PipelineSettings

    def settings(**values):
        return PipelineSettings.from_params(replay.node_parameter_values(values))

    default = settings().proposal_cfg
    assert default.box_net == "default" and default.box_net_threshold == 0.5
    assert settings(proposal_box_net="off").proposal_cfg.box_net == "off"
    assert settings(proposal_box_net="default_int8").proposal_cfg.box_net == "default_int8"
    assert default.box_net_depth == "same" and default.depth_box_net() == "default"
    plain = settings()
    assert plain.for_depth_frames() is plain                   # same: one network for all
    fast = settings(proposal_box_net_depth="default_int8")
    with_depth = fast.for_depth_frames()
    assert with_depth.proposal_cfg.box_net == "default_int8" and fast.proposal_cfg.box_net \
        == "default"
    assert fast.for_depth_frames() is with_depth and with_depth.for_depth_frames() is with_depth
    with pytest.raises(PipelineError, match="box_net_depth: no model file"):
        settings(proposal_box_net_depth=str(tmp_path / "missing.onnx"))
    # behind the cameras: the shipped network's INT8 copy in place of the shipped one only
    assert default.box_net_behind == "default_int8" and default.behind_box_net() == \
        "default_int8"
    behind = plain.for_frames_behind()
    assert behind.proposal_cfg.box_net == "default_int8" and plain.proposal_cfg.box_net == \
        "default" and plain.for_frames_behind() is behind
    kept = settings(proposal_box_net_behind="same")
    assert kept.for_frames_behind() is kept
    off = settings(proposal_box_net="off")
    assert off.for_frames_behind() is off
    with_depth = settings(proposal_box_net_depth="default").for_depth_frames()
    assert with_depth.for_frames_behind().proposal_cfg.box_net == "default_int8"
    with pytest.raises(PipelineError, match="box_net_behind: no model file"):
        settings(proposal_box_net_behind=str(tmp_path / "missing.onnx"))
    other = tmp_path / "copy.onnx"
    other.write_bytes(DEFAULT_BOX_NET.read_bytes())
    chosen = settings(proposal_box_net=str(other), proposal_box_net_threshold=0.6)
    assert chosen.proposal_cfg.box_net == str(other)
    assert chosen.for_frames_behind() is chosen         # a network the user chose stays
    assert chosen.proposal_cfg.box_net_threshold == 0.6
    # whether the first step behind the cameras changes a frame's boxes at all
    assert plain.behind_changes_boxes() and fast.behind_changes_boxes()
    assert settings(proposal_box_net="default_int8", proposal_box_net_depth="default") \
        .behind_changes_boxes()                          # frames with depth change
    for unchanged in (kept, off, chosen, settings(crop_source="full_frame"),
                      settings(crop_source="rois", rois=[0, 0, 10, 10])):
        assert not unchanged.behind_changes_boxes()
    with pytest.raises(PipelineError, match="no model file"):
        settings(proposal_box_net=str(tmp_path / "missing.onnx"))
    assert default.box_net_threads == 2
    assert settings(proposal_box_net_threads=1).proposal_cfg.box_net_threads == 1
    for bad in (0, 9):   # the parameter's range, and the proposer's own bound
        with pytest.raises(replay.InputError, match="proposal_box_net_threads must lie in"):
            settings(proposal_box_net_threads=bad)
        with pytest.raises(PipelineError, match="box_net_threads must be in"):
            PipelineSettings.from_params({**replay.node_parameter_values({}),
                                          "proposal_box_net_threads": bad})
    assert default.box_net_close_width == 240          # on (frames with depth: see below)
    close = settings(proposal_box_net_close_width=240).proposal_cfg
    assert close.box_net_close_width == 240 and close.box_net_close_min_px == 150
    with pytest.raises(replay.InputError, match="proposal_box_net_close_width must lie in"):
        settings(proposal_box_net_close_width=2000)
    with pytest.raises(PipelineError, match="box_net_close_width must be 0 or in"):
        settings(proposal_box_net_close_width=10)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(PipelineError, match="cannot load the box network"):
        settings(proposal_box_net=str(junk))


def test_the_close_pass_cameras_by_the_node_s_rule_and_the_replay_s_topics():
    """``proposal_box_net_close_topics`` (``PipelineSettings.close_cameras``): the settings
    of a frame from a camera not listed have the close pass off (made once); a listed camera
    and an empty list keep it. The offline replay names them as the bag's image topics and
    refuses one the bag has no images on."""
    from vl_distill_ros.evaluation import replay
    from vl_distill_ros.evaluation.replay_settings import with_bag_close_topics
    from vl_distill_ros.perception.pipeline import PipelineError, PipelineSettings

    def settings(**values):
        return PipelineSettings.from_params(replay.node_parameter_values(values))

    both = settings(proposal_box_net_close_width=240)
    assert both.close_cameras == () and both.for_camera("/head") is both
    wrist = settings(proposal_box_net_close_width=240,
                     proposal_box_net_close_topics=[" /wrist "])
    assert wrist.close_cameras == ("/wrist",)
    assert wrist.for_camera("/wrist") is wrist
    head = wrist.for_camera("/head")
    assert head.proposal_cfg.box_net_close_width == 0 and head.close_cameras == ()
    assert head.depth_cfg is wrist.depth_cfg and head.top_k == wrist.top_k
    assert wrist.for_camera("/head") is head            # made once
    off = settings(proposal_box_net_close_width=0, proposal_box_net_close_topics=["/wrist"])
    assert off.for_camera("/head") is off                # nothing to turn off
    with pytest.raises(PipelineError, match="close_cameras must name at most 64 cameras"):
        PipelineSettings(close_cameras=("/a", ""))
    with pytest.raises(PipelineError, match="close_cameras must name at most 64 cameras"):
        PipelineSettings(close_cameras=tuple(f"/c{i}" for i in range(65)))
    values = replay.node_parameter_values({"proposal_box_net_close_topics": ["hand/image"]})
    assert with_bag_close_topics(values, ["/cam/image", "/hand/image"])[
        "proposal_box_net_close_topics"] == ["/hand/image"]
    assert with_bag_close_topics(values, ["/cam/image", "hand/image/"])[
        "proposal_box_net_close_topics"] == ["hand/image/"]      # the bag's own spelling
    with pytest.raises(replay.InputError, match=r"\['hand/image'\] are not image topics of "
                                                r"the bag \(\['/cam/image'\]\)"):
        with_bag_close_topics(values, ["/cam/image"])
    assert "proposal_box_net_close_topics" in replay.TUNABLE_PARAMS


def test_the_cut_border_stage_config_reads_as_a_fine_tuning_of_the_shipped_network(
        repo_root: Path):
    """``config/train_box_net_cut.yaml`` (tried in session 41): the second stage's settings,
    started from the shipped ONNX with frozen batch norms, on the first stage's bags and the
    cut-border bags of ``tools/make_box_net_bags.py --cut-border`` (seeds 3170-3209)."""
    import fnmatch

    from vl_distill_ros.training.box_net import load_box_net_config

    cfg = load_box_net_config(repo_root / "config" / "train_box_net_cut.yaml")
    assert cfg.init_from.endswith("box_net.onnx") and cfg.freeze_batch_norm
    assert cfg.min_visible_frac == 0.25 and cfg.motion_blur_prob == 0.15
    names = [f"data/box_net_bags/b{seed}" for seed in range(3000, 3210)]
    chosen = {n for n in names if any(fnmatch.fnmatch(n, g) for g in cfg.bags)}
    cut = {f"data/box_net_bags/b{seed}" for seed in range(3170, 3210)}
    assert cut <= chosen and len(chosen) == 100
    assert not chosen & {f"data/box_net_bags/b{seed}" for seed in range(3130, 3170)}


def test_the_mixed_config_trains_once_on_every_view_from_the_backbone(repo_root: Path):
    """``config/train_box_net_mixed.yaml`` (session 42's experiment): the first stage's
    settings from the ImageNet backbone (no ``init_from``, batch norms trained), the second
    stage's motion blur and defocus, on every bag of ``tools/make_box_net_bags.py``: the 130
    of the first stage, the 40 rolled and the 40 cut-border ones."""
    import fnmatch

    from vl_distill_ros.training.box_net import load_box_net_config

    cfg = load_box_net_config(repo_root / "config" / "train_box_net_mixed.yaml")
    first = load_box_net_config(repo_root / "config" / "train_box_net.yaml")
    second = load_box_net_config(repo_root / "config" / "train_box_net_finetune.yaml")
    assert cfg.init_from == "" and not cfg.freeze_batch_norm and cfg.pretrained == "imagenet"
    assert (cfg.iterations, cfg.lr, cfg.min_visible_frac) == \
        (first.iterations, first.lr, first.min_visible_frac)
    assert (cfg.motion_blur_prob, cfg.motion_blur_max_px, cfg.defocus_max_sigma) == \
        (second.motion_blur_prob, second.motion_blur_max_px, second.defocus_max_sigma)
    names = [f"data/box_net_bags/b{seed}" for seed in range(3000, 3250)]
    chosen = [n for n in names if any(fnmatch.fnmatch(n, g) for g in cfg.bags)]
    assert chosen == names[:210]


def test_the_ttf_config_trains_the_size_over_each_gaussian(repo_root: Path):
    """``config/train_box_net_ttf.yaml`` (session 50's experiment): the first stage's bags
    and schedule from the ImageNet backbone, the second stage's blurs, and the size head
    trained over each object's Gaussian; any other ``size_targets`` is refused."""
    from vl_distill_ros.config import ConfigError
    from vl_distill_ros.training.box_net import BoxNetTrainConfig, load_box_net_config

    cfg = load_box_net_config(repo_root / "config" / "train_box_net_ttf.yaml")
    first = load_box_net_config(repo_root / "config" / "train_box_net.yaml")
    second = load_box_net_config(repo_root / "config" / "train_box_net_finetune.yaml")
    assert cfg.size_targets == "gaussian" and first.size_targets == "centre"
    assert cfg.init_from == "" and cfg.pretrained == "imagenet"
    assert (cfg.bags, cfg.iterations, cfg.lr) == (first.bags, first.iterations, first.lr)
    assert (cfg.motion_blur_prob, cfg.motion_blur_max_px, cfg.defocus_max_sigma) == \
        (second.motion_blur_prob, second.motion_blur_max_px, second.defocus_max_sigma)
    with pytest.raises(ConfigError, match="size_targets"):
        BoxNetTrainConfig(size_targets="everywhere")


def test_each_box_net_stage_takes_its_own_bags(repo_root: Path):
    """The first stage (and the second, which inherits its bags) takes the 130 bags of
    ``tools/make_box_net_bags.py`` without options, whatever else is in the folder (the
    rolled, cut-border, clutter and busy-cloth bags of later experiments); the clutter stage
    (``config/train_box_net_clutter.yaml``, session 43) 60 of them and the 30 clutter bags,
    the busy-cloth stage (session 47) the same 60 and the 40 busy-cloth bags."""
    import fnmatch

    from vl_distill_ros.training.box_net import load_box_net_config

    names = [f"data/box_net_bags/b{seed}" for seed in range(3000, 3280)]

    def chosen(name: str) -> list[str]:
        cfg = load_box_net_config(repo_root / "config" / name)
        return [n for n in names if any(fnmatch.fnmatch(n, g) for g in cfg.bags)]

    assert chosen("train_box_net.yaml") == chosen("train_box_net_finetune.yaml") == names[:130]
    clutter = chosen("train_box_net_clutter.yaml")
    assert clutter == names[:50] + names[100:110] + names[210:240]
    cfg = load_box_net_config(repo_root / "config" / "train_box_net_clutter.yaml")
    assert cfg.init_from.endswith("box_net.onnx") and cfg.freeze_batch_norm
    assert cfg.min_visible_frac == 0.4 and cfg.iterations == 1500
    assert chosen("train_box_net_busy.yaml") == names[:50] + names[100:110] + names[240:280]
    busy = load_box_net_config(repo_root / "config" / "train_box_net_busy.yaml")
    assert busy.init_from == cfg.init_from and busy.freeze_batch_norm
    # the close-view stage (session 88): 40 near and 10 far bags of the first stage, 10
    # cut-border bags, 11 clutter bags and the 30 close-view bags (seeds 3340-3369)
    names += [f"data/box_net_bags/b{seed}" for seed in range(3280, 3400)]
    assert chosen("train_box_net_close.yaml") == \
        names[:40] + names[100:110] + names[170:180] + names[210:221] + names[340:370]
    close = load_box_net_config(repo_root / "config" / "train_box_net_close.yaml")
    assert close.init_from == cfg.init_from and close.freeze_batch_norm


def test_the_shipped_network_s_third_stage_and_blend_are_what_make_box_net_runs(
        repo_root: Path):
    """Session 52's recipe: the third stage (``config/train_box_net_third.yaml``) trains the
    whole network from the second stage's ONNX export (frozen batch norms) on 60 of the first
    stage's bags, 20 cut-border and the 30 clutter bags; ``make box-net`` makes those bags,
    runs the three stages, blends the second and third at 0.4 into the bundle and quantises
    the blend."""
    import fnmatch
    import re

    from vl_distill_ros.training.box_net import load_box_net_config

    cfg = load_box_net_config(repo_root / "config" / "train_box_net_third.yaml")
    assert cfg.init_from == "runs/box_net_finetune/box_net.onnx" and cfg.freeze_batch_norm
    assert cfg.train_layers == "all" and cfg.iterations == 1500 and cfg.lr == 0.0003
    assert cfg.motion_blur_prob == 0.15 and cfg.min_visible_frac == 0.4
    names = [f"data/box_net_bags/b{seed}" for seed in range(3000, 3280)]
    chosen = [n for n in names if any(fnmatch.fnmatch(n, g) for g in cfg.bags)]
    assert chosen == names[:50] + names[100:110] + names[170:190] + names[210:240]
    make = (repo_root / "Makefile").read_text()
    recipe = make[make.index("\nbox-net:"):make.index("\nbox-net-int8:")]
    steps = [" ".join(line.split()) for line in recipe.replace("\\\n", " ").splitlines()]
    assert any(re.search(r"make_box_net_bags.py data/box_net_bags --cut-border 20 "
                         r"--clutter 30$", s) for s in steps), steps
    third = next(s for s in steps if "train_box_net_third.yaml" in s)
    blend = next(s for s in steps if "blend_box_nets.py" in s)
    assert "--out runs/box_net_third" in third
    assert re.search(r"runs/box_net_finetune/box_net.onnx runs/box_net_third/box_net.onnx "
                     r"--weight 0.4 --out vl_distill_ros/bundles/box_net.onnx", blend), blend
    assert steps.index(blend) > steps.index(third) and "$(MAKE) box-net-int8" in steps[-3:]


def test_a_head_stage_trains_the_head_and_leaves_the_backbone_as_loaded(repo_root, tmp_path):
    """``train_layers: head`` (``config/train_box_net_head.yaml``, session 51): from the
    shipped ONNX, a few steps change the head's and the lateral convolutions' weights and
    leave every backbone weight and statistic as loaded; its bags are 60 of the first
    stage's, 20 cut-border and the 30 clutter bags; any other ``train_layers`` is refused."""
    import fnmatch

    import torch

    from vl_distill_ros.cli import main
    from vl_distill_ros.config import ConfigError
    from vl_distill_ros.training.box_net import (BoxNetModel, BoxNetTrainConfig,
                                                 load_box_net_config, load_onnx_weights)

    config = repo_root / "config" / "train_box_net_head.yaml"
    cfg = load_box_net_config(config)
    assert cfg.train_layers == "head" and cfg.freeze_batch_norm
    names = [f"data/box_net_bags/b{seed}" for seed in range(3000, 3280)]
    assert [n for n in names if any(fnmatch.fnmatch(n, g) for g in cfg.bags)] == \
        names[:50] + names[100:110] + names[170:190] + names[210:240]
    loaded = BoxNetModel(pretrained=False)
    load_onnx_weights(loaded, DEFAULT_BOX_NET)
    before = {k: v.clone() for k, v in loaded.state_dict().items()}
    sample = repo_root / "demo" / "sample_tabletop"
    assert main(["train-box-net", "--config", str(config), "--no-progress",
                 "--out", str(tmp_path / "head"), f"bags=[{sample}]",
                 f"init_from={DEFAULT_BOX_NET}", "batch_size=2", "threads=1", "int8_frames=0",
                 "iterations=2", "lr=0.01"]) == 0
    after = torch.load(tmp_path / "head" / "box_net.pt", weights_only=True)
    backbone = [k for k in before if k.split(".")[0] in ("stem", "to_s8", "to_s16")]
    head = ("lat8", "lat16", "head", "heatmap", "size", "offset")
    trained = [k for k in before if k.split(".")[0] in head]
    assert len(backbone) > 100 and len(backbone) + len(trained) == len(before)
    assert all(torch.equal(before[k], after[k]) for k in backbone)
    assert all(not torch.equal(before[k], after[k]) for k in trained if k.endswith("weight")
               and not k.startswith("head.1") and not k.startswith("head.4"))
    BoxNet(tmp_path / "head" / "box_net.onnx")
    with pytest.raises(ConfigError, match="train_layers"):
        BoxNetTrainConfig(train_layers="neck")
