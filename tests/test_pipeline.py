import json

import numpy as np
import pytest
import torch

from depthkit import DepthOutput, Pipeline
from depthkit.pipeline import check_sparse
from depthkit.stages import COMPLETION_METHODS


def _scene(h=24, w=32, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    depth = np.linspace(1, 4, w, dtype=np.float32)[None].repeat(h, 0)
    sparse = np.zeros_like(depth)
    idx = rng.choice(h * w, 40, replace=False)
    sparse.flat[idx] = depth.flat[idx] + rng.normal(0, 0.01, 40).astype(np.float32)  # noisy, still kept exactly
    return image, sparse


@pytest.mark.parametrize("method", ["nearest", "ip_basic", "guided"])
def test_every_classical_method_keeps_measurements_exactly(method):
    image, sparse = _scene()
    out = Pipeline(stages=("complete",), method=method)(image, sparse)
    assert isinstance(out, DepthOutput)
    assert out.depth.dtype == np.float32 and out.depth.shape == sparse.shape
    m = sparse > 0
    assert np.array_equal(out.depth[m], sparse[m])
    assert (out.depth > 0).all() and np.isfinite(out.depth).all()
    assert set(out.timings) == {"complete", "total"} and out.timings["total"] >= out.timings["complete"] >= 0
    assert np.array_equal(out.stages["complete"].depth, out.depth)


def test_classical_methods_are_registered():
    assert {"nearest", "ip_basic", "guided"} <= set(COMPLETION_METHODS)


def test_batch_in_batch_out_and_paths(tmp_path):
    image, sparse = _scene()
    image2, sparse2 = _scene(seed=1)
    np.save(tmp_path / "s.npy", sparse2)
    pipe = Pipeline(method="nearest")
    outs = pipe([image, image2], [sparse, tmp_path / "s.npy"])
    assert isinstance(outs, list) and len(outs) == 2
    np.testing.assert_array_equal(outs[1].depth, pipe(image2, sparse2).depth)


def test_a_too_small_image_is_refused_alike_as_an_array_and_as_a_path(tmp_path):
    import cv2

    image = np.full((1, 50, 3), 128, np.uint8)
    sparse = np.zeros((1, 50), np.float32)
    sparse[0, 10] = 2.0
    cv2.imwrite(str(tmp_path / "one.png"), image)
    for given in (image, tmp_path / "one.png", str(tmp_path / "one.png")):
        with pytest.raises(ValueError, match=r"image is 1x50 pixels; expected at least 2x2"):
            Pipeline(method="nearest")(given, sparse)


def test_inputs_from_torch_and_pil():
    import torch
    from PIL import Image

    image, sparse = _scene()
    pipe = Pipeline(method="nearest")
    ref = pipe(image, sparse).depth
    np.testing.assert_array_equal(pipe(Image.fromarray(image), torch.from_numpy(sparse)).depth, ref)


def test_a_16_bit_pil_image_reads_as_its_file_does(tmp_path):
    """A 16-bit grey PNG opened with PIL (mode I;16) was converted by Pillow's convert('RGB'), which clips every value
    above 255: an all-white image, completed without a word, while the same file given as a path is scaled by 1/257.
    32-bit PIL modes (I, F) have no fixed range and are refused, not clipped (F became all black)."""
    from PIL import Image

    from depthkit.pipeline import check_image

    grey = np.random.default_rng(0).integers(0, 65536, (12, 16)).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode == "I;16"
        from_pil = check_image(im)
    np.testing.assert_array_equal(from_pil, check_image(tmp_path / "g16.png"))
    assert from_pil.shape == (12, 16, 3) and from_pil.dtype == np.uint8
    np.testing.assert_array_equal(from_pil[..., 0], (grey / 257.0 + 0.5).astype(np.uint8))
    big = Image.frombytes("I;16B", (16, 12), grey.astype(">u2").tobytes())
    np.testing.assert_array_equal(check_image(big), from_pil)
    with pytest.raises(ValueError, match=r"mode 'I' \(32-bit integer\).*Convert it first"):
        check_image(Image.fromarray(grey.astype(np.int32)))
    with pytest.raises(ValueError, match=r"mode 'F' \(32-bit float\).*floats in \[0, 1\]"):
        check_image(Image.fromarray(grey.astype(np.float32) / 65535))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda i, s: (i, s[:-1]), "pixel-aligned"),
        (lambda i, s: (i, np.where(s > 0, np.nan, 0).astype(np.float32)), "NaN/inf"),
        (lambda i, s: (i, np.where(s > 0, -1.0, 0).astype(np.float32)), "negative"),
        (lambda i, s: (i, np.zeros_like(s)), "no measured pixel"),
        (lambda i, s: (i, (s * 1000).astype(np.uint16)), "no depth scale was given"),
        (lambda i, s: (i.astype(np.float32) / 255, s), r"dtype float32.*Floats in \[0, 1\]: \(img \* 255\)"),
        (lambda i, s: (i.astype(np.float32), s), r"Floats in \[0, 255\] \(max \d+\): np.clip\(img, 0, 255\)"),
        (lambda i, s: (i[..., 0], s), "expected HxWx3"),
        (lambda i, s: (torch.from_numpy(i).to(torch.bfloat16), s), r"^image has dtype bfloat16; expected uint8"),
        (lambda i, s: (np.where(i > 9, i / 255, np.nan), s), r"float64; .* holds \d+ NaN/inf value\(s\).*nan_to_num"),
        (lambda i, s: (i / 127.5 - 1, s), r"span \[-1, 0\.99\d*\]: a normalised image\? Undo the normalisation"),
        (lambda i, s: (np.stack([i, i]), s), r"a stack of 2 images; .* pass a list: pipe\(list\(images\)"),
        (lambda i, s: (i.transpose(2, 0, 1), s), r"channels first.*image.transpose\(1, 2, 0\)"),
        (lambda i, s: (torch.from_numpy(i.transpose(2, 0, 1).copy()), s), r"image.permute\(1, 2, 0\)"),
        (lambda i, s: ("nope.gif", s), "not found"),
        (lambda i, s: (i, s[None]), "expected HxW"),
        (lambda i, s: (i, s.tolist()), r"received list\. Convert it first: numpy.asarray\(sparse, dtype=numpy.float32"),
        (lambda i, s: (i, s > 0), r"dtype bool; .* A mask says where depth was measured, not how far"),
        (lambda i, s: (i, s.astype(np.complex64)), r"dtype complex64; .* Convert it to float32 metres"),
    ],
)
def test_bad_inputs_get_clear_errors(mutate, message):
    image, sparse = _scene()
    image, sparse = mutate(image, sparse)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        Pipeline(method="nearest")(image, sparse)


def test_a_depth_input_of_another_size_gets_a_dense_maps_advice():
    """A sharpen-first pipeline's dense depth of another size is told to resize like an image (nearest), not to
    scatter its points as a sparse map is."""
    image, sparse = _scene()
    with pytest.raises(ValueError, match=r"sparse is .* scatter its points") as sparse_err:
        check_sparse(sparse[:-1], image.shape[:2])
    with pytest.raises(ValueError, match=r"depth is .* resized to the image's size like an image.*INTER_NEAREST") as err:
        check_sparse(np.full((image.shape[0] - 1, image.shape[1]), 2.0, np.float32), image.shape[:2], what="depth")
    assert "resize-sparse" not in str(err.value) and "resize-sparse" in str(sparse_err.value)


def test_batch_length_mismatch():
    image, sparse = _scene()
    with pytest.raises(ValueError, match="batch of 2"):
        Pipeline(method="nearest")([image, image], [sparse])
    sharpen = Pipeline(stages=("sharpen",))
    depth = np.full(sparse.shape, 2.0, np.float32)
    with pytest.raises(ValueError, match="2 depth maps .* got a list of 1"):  # was: one result, one image dropped
        sharpen([image, image], [sparse, sparse], depth=[depth])
    bad = sparse.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"batch item 1 \(of 2\): sparse .*NaN"):
        Pipeline(method="nearest")([image, image], [sparse, bad])
    with pytest.raises(FileNotFoundError, match=r"^batch item 1 \(of 2\): image file not found: .*nowhere\.png"):
        Pipeline(method="nearest")([image, "nowhere.png"], [sparse, sparse])
    from depthkit.pipeline import _with_prefix  # a ValueError subtype that one message cannot build stays a ValueError

    for err in (json.JSONDecodeError("bad", "{", 0), UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")):
        out = _with_prefix(err, "batch item 1 (of 2): ")
        assert isinstance(out, ValueError) and str(out) == f"batch item 1 (of 2): {err}"


def test_a_sharpen_first_batch_needs_no_sparse_maps():
    """One image may be sharpened with sparse=None; a batch of them was refused ("needs a list of 2 sparse maps; got
    NoneType") though its depth= may be one map or a list."""
    image, sparse = _scene()
    depth = np.full(sparse.shape, 2.0, np.float32)
    depth[:, 16:] = 3.0
    sharpen = Pipeline(stages=("sharpen",))
    outs = sharpen([image, image], None, depth=[depth, depth])
    one = sharpen(image, None, depth=depth).depth
    assert len(outs) == 2 and all(np.array_equal(o.depth, one) for o in outs)
    with pytest.raises(ValueError, match="a batch of 2 images needs a list of 2 sparse maps; got NoneType"):
        Pipeline(method="nearest")([image, image], None)  # completion still needs them


def test_a_depth_input_is_refused_by_a_pipeline_that_makes_its_own():
    image, sparse = _scene()
    with pytest.raises(ValueError, match="starts with 'complete', which makes its own"):
        Pipeline(method="nearest")(image, sparse, depth=np.full(sparse.shape, 99.0, np.float32))


def test_a_depth_scale_is_applied_once_and_only_to_integer_input(tmp_path):
    """An integer sparse file with its scale, and a float depth map next to it under the same scale: the sparse map
    is scaled once (not again after reading), the depth map is metres with a warning that the scale was not applied
    to it — the combination runs (sharpen alone: an integer PNG and depthkit's own float output)."""
    from depthkit.io import UnitWarning

    image, sparse = _scene()
    raw = (sparse * 1000).astype(np.uint16)
    np.save(tmp_path / "s.npy", raw)
    out = Pipeline(method="nearest")(image, tmp_path / "s.npy", depth_scale=1000)
    kept = raw / 1000
    np.testing.assert_allclose(out.depth[kept > 0], kept[kept > 0], rtol=1e-6)
    depth = np.full(sparse.shape, 2.0, np.float32)
    with pytest.warns(UnitWarning, match="depth holds floats, read as metres: the depth scale 1000"):
        out = Pipeline(stages=("sharpen",))(
            image, tmp_path / "s.npy", depth=depth, depth_scale=1000)
    np.testing.assert_allclose(out.depth[kept > 0], kept[kept > 0], rtol=1e-6)


def test_a_nested_list_is_not_taken_for_a_batch():
    image, sparse = _scene()
    with pytest.raises(ValueError, match="nested Python list"):
        Pipeline(method="nearest")(image.tolist(), sparse)


def test_a_masked_arrays_masked_pixels_are_missing():
    """np.ma: the masked pixels are not measurements, whatever lies under the mask (here NaN and values far off):
    the output keeps only the unmasked values, and it equals the run on the map with those pixels set to 0."""
    image, sparse = _scene()
    under = sparse.copy()
    hide = sparse > np.median(sparse[sparse > 0])
    under[hide] = np.where(np.arange(hide.sum()) % 2, np.nan, 99.0)
    out = Pipeline(method="nearest")(image, np.ma.masked_array(under, mask=hide))
    plain = np.where(hide, 0.0, sparse).astype(np.float32)
    assert np.array_equal(out.depth, Pipeline(method="nearest")(image, plain).depth)
    assert np.array_equal(out.depth[plain > 0], plain[plain > 0]) and not np.isin(99.0, out.depth)


def test_low_precision_tensors_and_float64_maps():
    """A bfloat16 tensor (no numpy dtype) is widened, and its values are kept exactly; a float64 map is float32 on
    the way in (the output's precision), and a positive value that float32 cannot hold is refused, not dropped."""
    import torch

    image, sparse = _scene()
    bf = torch.from_numpy(sparse).to(torch.bfloat16)
    out = Pipeline(method="nearest")(image, bf)
    kept = bf.float().numpy()
    assert np.array_equal(out.depth[kept > 0], kept[kept > 0])
    f64 = sparse.astype(np.float64)
    out = Pipeline(method="nearest")(image, f64)
    assert np.array_equal(out.depth[f64 > 0], f64[f64 > 0].astype(np.float32))
    f64[3, 4] = 1e-300
    with pytest.raises(ValueError, match="1 positive value.* too small for float32 metres .* 1e-300"):
        Pipeline(method="nearest")(image, f64)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"stages": ("paint",)}, "unknown stage"),
        ({"stages": ()}, "no stages"),
        ({"method": "magic"}, "unknown completion method"),
        ({"method": ""}, "unknown completion method ''"),  # was: the default method, without a word
        ({"stage_options": {"complete": {"method": ""}}}, "unknown completion method ''"),
        ({"dtype": "int8"}, "dtype"),
        ({"device": "tpu"}, "device"),
        ({"stages": "complete", "stage_options": {"sharpen": {}}}, "not run"),
        ({"stage_options": {"foo": {}}}, r"names \['foo'\], which is not a stage; stages are complete, sharpen"),
        ({"stages": ("sharpen", "complete")}, "must be distinct and in the order complete, sharpen"),
        ({"stages": "complete,complete"}, "must be distinct"),
        ({"stages": 5}, "stages must be a list"),
        ({"stage_options": {"complete": 5}}, r"stage_options\['complete'\] must be a dict"),
        ({"stage_options": ["complete"]}, "stage_options must map"),
    ],
)
def test_bad_pipeline_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Pipeline(**kwargs)


def test_a_method_is_named_once_and_must_be_a_name():
    """A list as the method was a TypeError (unhashable) with a traceback; two different methods (method= and
    stage_options complete.method) ran the first without a word."""
    for method in (["sdim"], {"a": 1}):
        with pytest.raises(ValueError, match=r"^unknown completion method"):
            Pipeline(stages=("complete",), stage_options={"complete": {"method": method}})
    with pytest.raises(ValueError, match=r"^method='guided' and stage_options complete.method='nearest' name two"):
        Pipeline(method="guided", stage_options={"complete": {"method": "nearest"}})
    assert repr(Pipeline(method="guided", stage_options={"complete": {"method": "guided"}}).stages[0]) == \
        "ClassicalCompleteStage(method='guided')"


def test_an_option_refused_from_a_checkpoint_manifest_names_the_manifest(tmp_path):
    """A value the user never typed (it is in the checkpoint's depthkit.json) is refused with the file named; the
    caller's own options are listed apart."""
    import json
    import shutil

    from depthkit.resources import checkpoints_dir

    ck = tmp_path / "ck"
    shutil.copytree(checkpoints_dir() / "default", ck)
    manifest = json.loads((ck / "depthkit.json").read_text())
    manifest["stages"]["complete"]["query_budgett"] = 5
    (ck / "depthkit.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['query_budgett'\].* \(the complete stage's options "
                                         r"\[.*'query_budgett'.*\] come from .*ck/depthkit.json; given here: "
                                         r"\['query_budget'\]\)$"):
        Pipeline.from_pretrained(ck, stages=("complete",), stage_options={"complete": {"query_budget": 8}})


def test_output_repr_is_compact():
    image, sparse = _scene(h=200, w=300)
    out = Pipeline(method="nearest")(image, sparse)
    text = repr(out)
    assert "200x300 float32" in text and "confidence=None" in text and len(text) < 300
    assert len(repr(out.stages["complete"])) < 300


@pytest.mark.parametrize("scale", [-5, 0, float("nan"), float("inf")])
def test_an_impossible_depth_scale_is_refused_with_float_input_too(scale):
    """A float map does not use the depth scale, so -5 or NaN passed with one was only warned about as 'not applied'
    (while the same scale with an integer map, or 'x' with either, was refused)."""
    image, sparse = _scene()
    with pytest.raises(ValueError, match=r"^depth scale must be a finite number > 0 units per metre; received"):
        Pipeline(method="nearest")(image, sparse, depth_scale=scale)


def test_integer_sparse_in_memory_uses_depth_scale():
    image, sparse = _scene()
    mm = np.round(sparse * 1000).astype(np.uint16)
    out = Pipeline(method="nearest")(image, mm, depth_scale=1000)
    m = sparse > 0
    np.testing.assert_allclose(out.depth[m], mm[m] / 1000, atol=1e-6)


def test_devices_are_checked_and_auto_resolves():
    import torch

    assert Pipeline(method="nearest", device="auto").device == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            Pipeline(method="nearest", device="cuda")
    with pytest.raises(ValueError, match="not supported"):
        Pipeline(method="nearest", device="gpu")


def test_shape_mismatch_advises_scattering_points():
    image, sparse = _scene()
    with pytest.raises(ValueError, match="scatter its points at scaled coordinates"):
        Pipeline(method="nearest")(image, sparse[:, :-2])


def test_huge_finite_sparse_value_is_not_called_nan():
    image, sparse = _scene()
    big = sparse.astype(np.float64)
    big[0, 0] = 1e39
    with pytest.raises(ValueError, match="too large for float32") as exc:
        Pipeline(method="nearest")(image, big)
    assert "NaN" not in str(exc.value)


def test_the_pipeline_restores_measurements_a_stage_dropped(monkeypatch):
    """The output keeps the measured values whatever a stage returns: a stage that ignores them (a third-party or
    future stage; every shipped stage also restores them itself) still gives the measured values back exactly."""
    import dataclasses

    from depthkit import stages
    from depthkit.outputs import StageResult

    class Careless:
        name = "complete"

        def run(self, image, sparse, depth=None):
            return StageResult(depth=np.full(sparse.shape, 2.5, np.float32), confidence=None, extras={}, seconds=0.0)

    monkeypatch.setitem(stages.STAGES, "complete",
                        dataclasses.replace(stages.STAGES["complete"], factory=lambda *a, **k: Careless()))
    image, sparse = _scene()
    out = Pipeline(stages=("complete",))(image, sparse)
    m = sparse > 0
    assert np.array_equal(out.depth[m], sparse[m])
    assert np.all(out.depth[~m] == 2.5)


def test_a_classical_methods_overflow_blames_no_checkpoint():
    """ip_basic given one depth at float32's maximum overflowed to infinity, and the error said the (non-existent)
    checkpoint weights were probably corrupt; ip_basic now refuses the depth itself, naming it and what to do."""
    image, sparse = _scene()
    sparse[5, 5] = np.finfo(np.float32).max
    with pytest.raises(ValueError, match=r"ip_basic: the largest depth, 3.4e\+38 m, is too large for its float32 "
                                         r"inversion .* check the units, or use nearest or guided") as exc:
        Pipeline(method="ip_basic")(image, sparse)
    assert "checkpoint" not in str(exc.value) and "weights" not in str(exc.value)


def test_the_run_summary_repr_shows_the_settings_in_force():
    """`depthkit run` prints the pipeline's repr: two runs with different options must not print the same line. The
    complete stage shows the refiner and every option off its default; the sharpen stage its run-time limits (the
    SharpDepthConfig fields off the paper's defaults), not the training-only ones."""
    default = repr(Pipeline())
    assert "refiner=on" in default and "hole_fill='colour'" in default and "occlusion_fill='auto'" in default
    assert "'keep_near_measured_px': 24" in default and "'keep_scanline_frames': True" in default
    assert "lambda_" not in default and "ema_" not in default and "gate_prob" not in default
    changed = repr(Pipeline(stage_options={"complete": {"refine": False, "hole_fill": None},
                                           "sharpen": {"config": {"keep_near_measured_px": 0.0}}}))
    assert "refiner=off" in changed and "hole_fill" not in changed and "keep_near_measured_px" not in changed
    assert "'change_within_measured_px': 32" in changed


def test_a_pipeline_shared_by_threads_runs_one_image_at_a_time(monkeypatch):
    """Two threads calling one Pipeline: its stages keep per-call state on their models (the default sharpener swaps
    its UNet's attention processors in for each call), and a second call entering while the first ran failed with
    "self_attention_max_keys cannot pool this UNet's self-attention: its processor is PooledKeysAttention". The
    stage here notes whether another call entered while it was inside; the Pipeline must not let one."""
    import dataclasses
    import pickle
    import threading

    from depthkit import stages
    from depthkit.outputs import StageResult

    image, sparse = _scene()  # the lock does not stop a pipeline from pickling (a classical one does)
    assert pickle.loads(pickle.dumps(Pipeline(method="nearest")))(image, sparse).depth.shape == sparse.shape
    inside, overlapped, calls, second = [], [], [], threading.Event()

    class Stateful:
        name = "complete"

        def run(self, image, sparse, depth=None):
            if inside:
                overlapped.append(True)
            inside.append(True)
            calls.append(True)
            if len(calls) == 1:
                second.wait(0.5)  # the first call waits here for a second one to enter (it must not)
            else:
                second.set()
            inside.pop()
            return StageResult(depth=np.full(sparse.shape, 2.5, np.float32))

    monkeypatch.setitem(stages.STAGES, "complete",
                        dataclasses.replace(stages.STAGES["complete"], factory=lambda *a, **k: Stateful()))
    pipe = Pipeline(stages=("complete",))
    errors = []

    def call():
        try:
            pipe(image, sparse)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not overlapped


def test_a_sparse_matrix_is_a_sparse_map():
    """A torch sparse tensor (COO, CSR) or a scipy.sparse matrix as the sparse map: its implicit zeros are missing
    pixels, as 0 is in depthkit. A torch sparse tensor escaped as torch's TypeError ("can't convert Sparse layout
    tensor to numpy"), scipy's was refused; a meta tensor escaped as NotImplementedError."""
    image, sparse = _scene()
    pipe = Pipeline(method="nearest")
    ref = pipe(image, sparse).depth
    t = torch.from_numpy(sparse)
    for given in (t.to_sparse(), t.to_sparse_csr()):
        np.testing.assert_array_equal(pipe(image, given).depth, ref)
    scipy_sparse = pytest.importorskip("scipy.sparse")
    np.testing.assert_array_equal(pipe(image, scipy_sparse.csr_matrix(sparse)).depth, ref)
    with pytest.raises(ValueError, match="meta device"):
        pipe(image, torch.empty(sparse.shape, device="meta"))


def test_a_batch_item_a_stage_refuses_is_named(monkeypatch):
    """The input checks name a refused batch item ("batch item k (of n): ..."); an item refused by a stage while it
    runs (the learned completer's aspect-ratio limit, say) came out bare, so a list of frames did not say which."""
    import dataclasses

    from depthkit import stages
    from depthkit.outputs import StageResult

    class Picky:
        name = "complete"

        def run(self, image, sparse, depth=None):
            if image.shape[1] > 40:
                raise ValueError(f"this stage refuses a {image.shape[0]}x{image.shape[1]} image")
            return StageResult(depth=np.full(sparse.shape, 2.5, np.float32))

    monkeypatch.setitem(stages.STAGES, "complete",
                        dataclasses.replace(stages.STAGES["complete"], factory=lambda *a, **k: Picky()))
    small, wide = _scene(), _scene(w=48)
    with pytest.raises(ValueError, match=r"^batch item 2 \(of 3\): this stage refuses a 24x48 image$"):
        Pipeline(stages=("complete",))([small[0], small[0], wide[0]], [small[1], small[1], wide[1]])


def test_the_lazy_exports_are_listed_by_dir():
    """``dir(depthkit)`` lacked Pipeline, DepthOutput and StageResult (lazy module __getattr__), so tab completion
    did not offer them."""
    import depthkit

    assert {"Pipeline", "DepthOutput", "StageResult", "__version__"} <= set(dir(depthkit))
