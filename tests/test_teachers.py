"""Metric sources for SharpDepth training (depthkit.sharpen.teachers): spec parsing, each source, clear errors."""

import importlib.util

import numpy as np
import pytest

from depthkit.checkpoints import CheckpointError
from depthkit.data.baselines import guided
from depthkit.data.sparse import sample_random_points
from depthkit.data.synthetic import render_scene
from depthkit.sharpen.teachers import (
    CallableSource,
    CompleteSource,
    NpySource,
    build_metric_source,
    check_metric,
    parse_source_spec,
)


def _scene(seed=1, h=40, w=48):
    s = render_scene(seed, h, w, kind="indoor")
    return s.image, s.depth, sample_random_points(s.depth, 60, seed)


def test_parse_source_spec():
    assert parse_source_spec("complete") == ("complete", None)
    assert parse_source_spec("complete:ip_basic") == ("complete", "ip_basic")
    assert parse_source_spec("unidepth:lpiccinelli/unidepth-v2-vits14") == ("unidepth", "lpiccinelli/unidepth-v2-vits14")
    assert parse_source_spec("npy:/a/b:c") == ("npy", "/a/b:c")
    for bad, msg in [("midas", "unknown metric source"), ("hf", "needs a folder"), ("", "non-empty"),
                     ("npy:", "needs a folder")]:
        with pytest.raises(ValueError, match=msg):
            parse_source_spec(bad)


def test_complete_source_is_the_complete_stage_and_needs_sparse():
    image, _, sparse = _scene()
    src = build_metric_source("complete:guided")
    assert isinstance(src, CompleteSource) and src.needs_sparse
    out = src(image, sparse, "x")
    expected = guided(image, sparse)
    measured = sparse > 0
    assert out.dtype == np.float32 and out.shape == sparse.shape
    assert np.allclose(out[~measured], expected[~measured]) and np.array_equal(out[measured], sparse[measured])
    with pytest.raises(ValueError, match="needs sparse input"):
        src(image, np.zeros_like(sparse), "x")
    with pytest.raises(ValueError, match="unknown completion method"):
        build_metric_source("complete:nonsense")


def test_npy_source_finds_nested_names_and_reports_missing(tmp_path):
    image, depth, _ = _scene()
    (tmp_path / "seq1").mkdir()
    np.save(tmp_path / "seq1" / "frame_000.npy", depth)
    np.save(tmp_path / "frame_001.npy", depth * 2)
    src = build_metric_source(f"npy:{tmp_path}")
    assert isinstance(src, NpySource)
    assert np.array_equal(src(image, None, "seq1/frame_000"), depth)
    assert np.array_equal(src(image, None, "other_seq/frame_001"), depth * 2)  # falls back to the last part
    with pytest.raises(FileNotFoundError, match="frame_002"):
        src(image, None, "seq1/frame_002")
    with pytest.raises(CheckpointError, match="outside"):
        src(image, None, "../escape")
    np.save(tmp_path / "small.npy", depth[:10])
    with pytest.raises(ValueError, match=r"shape \(10, 48\)"):
        src(image, None, "small")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_metric_source(f"npy:{tmp_path / 'missing'}")
    with pytest.raises(ValueError, match="takes no options"):
        build_metric_source(f"npy:{tmp_path}", output="metric")


def test_callable_source_and_output_checks():
    image, depth, _ = _scene()
    src = build_metric_source(lambda img, sp, name: depth + 1.0)
    assert isinstance(src, CallableSource)
    assert np.allclose(src(image), depth + 1.0)
    nan = depth.copy()
    nan[0, 0] = np.nan
    assert check_metric(nan, depth.shape, "t")[0, 0] == 0.0  # unknown, not an error
    with pytest.raises(ValueError, match="negative"):
        check_metric(-depth, depth.shape, "t")
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        src(image.astype(np.float32))


def _tiny_dpt(tmp_path, depth_type=None):
    import torch
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessorPil

    cfg = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=37, image_size=32,
                    patch_size=8, neck_hidden_sizes=[8, 8, 8, 8], fusion_hidden_size=16, reassemble_factors=[4, 2, 1, 0.5],
                    backbone_out_indices=[0, 1, 2, 3], is_hybrid=False)
    if depth_type is not None:
        cfg.depth_estimation_type = depth_type
    torch.manual_seed(0)
    model = DPTForDepthEstimation(cfg).eval()
    # a positive bias so the random head predicts depth > 0 everywhere (its ReLU would give zeros otherwise)
    with torch.no_grad():
        model.head.head[-2].bias.fill_(1.0)
    model.save_pretrained(tmp_path)
    DPTImageProcessorPil(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(tmp_path)
    return model


def test_hf_source_metric_and_relative(tmp_path):
    import torch

    image, depth, sparse = _scene()
    model = _tiny_dpt(tmp_path / "metric", "metric")
    src = build_metric_source(f"hf:{tmp_path / 'metric'}")
    out = src(image)
    assert out.shape == depth.shape and out.dtype == np.float32 and (out > 0).all()
    # the same numbers by hand: resize to 32x32, normalise, run, upsample bicubically to the image size
    from transformers import AutoImageProcessor

    proc = AutoImageProcessor.from_pretrained(tmp_path / "metric")
    with torch.no_grad():
        raw = model(**proc(images=image, return_tensors="pt"))
    ref = proc.post_process_depth_estimation(raw, target_sizes=[depth.shape])[0]["predicted_depth"].numpy()
    assert np.allclose(out, ref, atol=1e-5)

    _tiny_dpt(tmp_path / "plain")
    with pytest.raises(ValueError, match="options.output"):
        build_metric_source(f"hf:{tmp_path / 'plain'}")
    rel = build_metric_source(f"hf:{tmp_path / 'plain'}", output="relative_disparity")
    assert rel.needs_sparse
    aligned = rel(image, sparse, "x")
    from depthkit.geometry import align_disparity

    assert np.allclose(aligned, align_disparity(ref, sparse, sparse > 0), rtol=1e-5)
    with pytest.raises(FileNotFoundError, match="config.json"):
        build_metric_source(f"hf:{tmp_path}")


@pytest.mark.skipif(importlib.util.find_spec("unidepth") is not None, reason="unidepth is installed here")
def test_unidepth_missing_package_says_how_to_get_it():
    with pytest.raises(ImportError, match="unidepth package.*github.com/lpiccinelli-eth/UniDepth"):
        build_metric_source("unidepth")
