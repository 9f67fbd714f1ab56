"""The learned ``complete`` stage: an SDIM completer checkpoint driven by the inference engine.

``CompleteVLMStage.run(image, sparse)``:

1. plan the queries (:func:`depthkit.complete.query_plan.plan_queries`): missing pixels on a grid (``query_stride``
   or ``query_budget``); measured pixels are never asked;
2. if the checkpoint's prompts carry a prior (``prompt_prior: nearest | guided``) or fusion is on, compute the
   classical interpolation of the sparse map once (the same baseline the trainer used for priors);
3. encode the image prefix once and answer every query in batches (:class:`depthkit.complete.engine.CompletionEngine`;
   the text readout decodes digits, the residual head reads one hidden state);
4. fuse (switch ``fusion``: none | fallback | blend, by each answer's confidence: ``fallback`` replaces
   low-confidence answers by the classical interpolation), then fill the full resolution with the
   RGB-guided edge-aware interpolation anchored on measured points and answers (measured values copied exactly);
5. if the checkpoint has a dense refiner (:mod:`depthkit.complete.refiner`) and option ``refine`` is not false,
   correct the filled map at every pixel with it (measured values copied exactly again), at the strength the frame's
   own measured points support (:mod:`depthkit.complete.refiner_check`, option ``refine_check``);
6. with option ``occlusion_fill`` (a stereo matcher's map), give its occluded runs the background's depth;
7. with option ``hole_fill`` (a dense sensor's frame), give the far side of each hole at a depth edge, as the image's
   colours split it, the far surface's depth.

Returns a :class:`depthkit.outputs.StageResult` with ``depth`` (HxW float32 metres), ``confidence`` (HxW in [0, 1],
1 at measured pixels, decaying away from measured and queried pixels) and ``extras``: ``query_mask`` (1 where a
query was asked), ``query_confidence`` (the answer's confidence at queried pixels, 0 elsewhere),
``unparseable_mask`` (1 where an answer could not be read — those pixels are filled from neighbours). ``last_stats`` holds the engine's timings and counts of the last run (``n_queries``,
``n_unparseable``, ``prefix_seconds``, ``suffix_seconds``, ``stride``, ...).

Options (from the checkpoint manifest, ``Pipeline(stage_options={"complete": {...}})`` or keyword arguments):
``query_stride`` (the finest grid step, px; the budget may raise it, said once in a warning), ``query_budget``
(default 1024 queries; null: no cap), ``batch_size`` (128), ``memory_budget_mb`` (2048),
``attn_implementation`` (for the prefix pass: ``sdpa`` | ``eager`` | ``flash_attention_2``; the suffix batches use
the engine's shared-prefix attention), ``decode`` (constrained | free), ``fusion`` (none), ``fusion_threshold``
(0.5), ``fill`` (anchors | residual: how answers become the dense map, see
:mod:`~depthkit.complete.query_plan`), ``confidence_tolerance`` (0.1), ``confidence_decay_px`` (None: the anchors' mean spacing; see
:func:`~depthkit.complete.query_plan.confidence_map`), ``max_working_side`` (2048 px: larger inputs are completed
at that size and upsampled, see :meth:`CompleteVLMStage.run`; at least :data:`MIN_WORKING_SIDE`, 28 px). A sparse map without any measured pixel is refused when the
checkpoint writes a prompt prior (there is nothing to interpolate it from); with fusion on and prompt_prior none it
turns fusion off for that call (answers used as given; ``last_stats["fusion"]`` says so). ``refine`` (None: on when
the checkpoint has a refiner; False: off, the ablation; True: on, an error if the checkpoint has none;
``last_stats["refined"]`` says whether it ran, ``refine_seconds`` how long, check included). ``refine_check`` (True:
the frame's own measured points decide how far to trust the refiner, :mod:`~depthkit.complete.refiner_check`;
``last_stats["refine_strength"]`` and ``["refine_check"]`` record the decision; False: the refiner as trained).
``occlusion_fill`` (None: off; ``left`` / ``right``: the sparse map is a stereo matcher's with that camera as the
reference, and unmeasured runs beside a nearer surface get the farther side's depth,
:mod:`depthkit.complete.occlusion`; ``auto``: the side read from the frame's holes, only runs whose widths follow
stereo geometry, nothing when the frame shows no side, ``last_stats["occlusion_side"]`` says which;
``last_stats["occlusion_filled"]`` counts the pixels set, at the stage's working size). ``hole_fill`` (None: off;
``colour``: on frames with at least 30 % of their pixels measured, the colour-split fill of
:mod:`depthkit.complete.hole_fill`; ``last_stats["hole_filled"]`` counts the pixels set, at the working size; the
embedded default's manifest turns it on). The pixels either fill set are the result's ``extras["placed"]`` (1 = set by
a rule; ``last_stats["placed_pixels"]`` counts them at the input's size), which a sharpen stage with ``keep_placed``
leaves as they are. ``device`` and ``dtype`` (float32 | bfloat16 |
float16) come from the pipeline.
"""

from __future__ import annotations

import time

import numpy as np

from depthkit.checkpoints import MAX_WORKING_SIDE
from depthkit.complete.settings import CompleteSettings
from depthkit.outputs import StageResult

__all__ = ["CompleteVLMStage", "MIN_WORKING_SIDE", "STAGE_OPTIONS", "check_numeric_options"]

STAGE_OPTIONS = {
    "query_stride": None,
    "query_budget": 1024,
    "batch_size": 128,
    "memory_budget_mb": 2048.0,
    "decode": "constrained",
    "fusion": "none",
    "fusion_threshold": 0.5,
    "fill": "anchors",
    "confidence_tolerance": 0.1,
    "confidence_decay_px": None,
    "max_working_side": MAX_WORKING_SIDE,
    "refine": None,
    "refine_check": True,
    "occlusion_fill": None,
    "hole_fill": None,
}


MIN_WORKING_SIDE = 28
"""The smallest ``max_working_side`` (pixels): one vision token of Qwen2.5-VL (14-px patches merged 2x2). Its
processor enlarges a smaller image to at least one token a side, so a smaller working side saves the vision tower no
work and only discards detail first (at 2 px a 48x64 frame is completed as 2x2 pixels, no query asked: a flat map)."""

# numeric options: (whole numbers only, lower bound, lower bound allowed, upper bound, None allowed)
_NUMERIC_OPTIONS = {
    "query_stride": (True, 1, True, None, True),
    "query_budget": (True, 0, True, None, True),
    "batch_size": (True, 1, True, None, False),
    "memory_budget_mb": (False, 0.0, False, None, False),
    "fusion_threshold": (False, 0.0, True, 1.0, False),
    "confidence_tolerance": (False, 0.0, False, None, False),
    "confidence_decay_px": (False, 0.0, False, None, True),
    "max_working_side": (True, MIN_WORKING_SIDE, True, None, False),
}
_NULL_MEANS = {"query_stride": "chosen from query_budget", "query_budget": "no cap: every missing pixel is asked",
               "confidence_decay_px": "the anchors' mean spacing"}
"""What null means for each nullable numeric option, said when a value is refused."""
_BOUND_REASONS = {"max_working_side": f"{MIN_WORKING_SIDE} px is one vision token of the completer, whose processor "
                                      "enlarges smaller images: a smaller side only loses detail"}
"""Why a bound of :data:`_NUMERIC_OPTIONS` is where it is, said when it refuses a value."""


def _check_options(options: dict, loading: bool = False) -> None:
    """Refuse unknown options and ill-typed numeric ones by name (``ValueError``); ``loading``: called by
    :meth:`CompleteVLMStage.from_checkpoint`, which also takes ``attn_implementation``."""
    unknown = sorted(set(options) - set(STAGE_OPTIONS))
    if unknown:
        allowed = sorted(STAGE_OPTIONS) + (["attn_implementation"] if loading else [])
        hint = (" (attn_implementation is an argument of CompleteVLMStage.from_checkpoint: it is fixed when the "
                "model is loaded)" if "attn_implementation" in unknown and not loading else "")
        raise ValueError(f"unknown option(s) {unknown} for the learned complete stage; allowed: {allowed}{hint}.")
    check_numeric_options(options)


def check_numeric_options(options: dict) -> None:
    """Refuse a numeric stage option (:data:`_NUMERIC_OPTIONS`) of the wrong type or out of its range, naming it
    (``ValueError``), before any model is loaded or any image is run. Booleans are not numbers here."""
    import math

    for name, (whole, low, low_ok, high, nullable) in _NUMERIC_OPTIONS.items():
        value = options.get(name)
        if name not in options or (nullable and value is None):
            continue
        number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
        try:
            ok = number and math.isfinite(value) and (value >= low if low_ok else value > low)
        except OverflowError:  # an integer beyond float's range (a YAML number with hundreds of digits)
            ok = False
        ok = ok and (high is None or value <= high) and (not whole or float(value).is_integer())
        if not ok:
            what = "a whole number" if whole else "a finite number"
            bound = (f">= {low:g}" if low_ok else f"> {low:g}") + ("" if high is None else f" and <= {high:g}")
            example = STAGE_OPTIONS[name] if STAGE_OPTIONS[name] is not None else 4
            why = f" ({_BOUND_REASONS[name]})" if name in _BOUND_REASONS else ""
            raise ValueError(f"complete stage option {name}={value!r}: expected {what} {bound}"
                             f"{f' or null ({_NULL_MEANS[name]})' if nullable else ''}{why}; e.g. --option "
                             f"complete.{name}={example}.")


def _under_centres(small: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``small`` (a working-size h x w map, e.g. a 0/1 mask) at ``shape`` = (H, W): each pixel takes the working pixel
    under its centre, by :func:`depthkit.sparse_resize.map_to_resized` — the pixel :func:`depthkit.io.resize_sparse`
    put that pixel's measured point on, so a measured pixel's mask is its own point's (never a query's). Plain
    INTER_NEAREST takes a block's top-left pixel (half a working pixel off); OpenCV's INTER_NEAREST_EXACT, in fixed
    point, rounds a centre that falls exactly on a working pixel's border to the pixel before it (4032 -> 2048 px,
    a phone photo at the default working side: 32 rows and 32 columns), where the exact integer map takes the next."""
    from depthkit.sparse_resize import map_to_resized

    (h, w), (hs, ws) = shape, small.shape
    rows, _ = map_to_resized(np.arange(h), np.zeros(h, np.int64), (h, w), (hs, ws))
    _, cols = map_to_resized(np.zeros(w, np.int64), np.arange(w), (h, w), (hs, ws))
    return small[np.ix_(rows, cols)]


class CompleteVLMStage:
    """Depth completion with a trained SDIM completer (see the module docstring).

    Args:
        model: an :class:`~depthkit.complete.model.SDIMModel` in eval mode.
        processor: its processor.
        settings: the checkpoint's :class:`~depthkit.complete.settings.CompleteSettings` (``prompt_prior``,
            ``pixel_reference``, ``readout``, ``prompt_version``).
        residual_head: the trained head for ``readout="residual_head"``.
        refiner: the checkpoint's optional :class:`~depthkit.complete.refiner.DenseRefiner`.
        options: see :data:`STAGE_OPTIONS` and the module docstring.
    """

    name = "complete"

    def __init__(self, model, processor, settings: CompleteSettings, residual_head=None, refiner=None, **options):
        from depthkit.complete.engine import CompletionEngine
        from depthkit.complete.query_plan import ANSWER_FUSIONS, DENSE_FILLS

        _check_options(options)
        self.options = {**STAGE_OPTIONS, **options}
        self._stride_said = False  # the budget raised query_stride: said once (see _complete)
        if self.options["fusion"] not in ANSWER_FUSIONS:
            raise ValueError(f"fusion={self.options['fusion']!r} is not one of {ANSWER_FUSIONS}.")
        if self.options["fill"] not in DENSE_FILLS:
            raise ValueError(f"fill={self.options['fill']!r} is not one of {DENSE_FILLS}; 'anchors' makes answers "
                             "extra points of the guided fill, 'residual' makes them corrections of it.")
        refine = self.options["refine"]
        if not (refine is None or isinstance(refine, bool)):  # not `in (None, True, False)`: 0 == False there
            raise ValueError(f"refine={refine!r}; allowed: None (on when the checkpoint has a dense refiner), true, "
                             "false.")
        if refine is True and refiner is None:
            raise ValueError("refine=true but this completer checkpoint has no dense refiner (no 'refiner' in "
                             "complete.json); leave refine unset or train one (recipes/default/refine.yaml).")
        from depthkit.complete.occlusion import OCCLUSION_FILLS

        for key in ("occlusion_fill", "hole_fill"):  # YAML reads "off" / "no" / "false" as False: off, as null
            if self.options[key] is False:
                self.options[key] = None
        if self.options["occlusion_fill"] not in OCCLUSION_FILLS:
            raise ValueError(f"occlusion_fill={self.options['occlusion_fill']!r}; allowed: null (off), left or right "
                             "(the sparse map is a stereo matcher's, with that camera as the reference) or auto (the "
                             "side read from the frame's holes): depthkit.complete.occlusion.")
        from depthkit.complete.hole_fill import HOLE_FILLS

        if self.options["hole_fill"] not in HOLE_FILLS:
            raise ValueError(f"hole_fill={self.options['hole_fill']!r}; allowed: null (off) or colour (a dense "
                             "sensor's holes at depth edges split by the image's colours: depthkit.complete.hole_fill).")
        if not isinstance(self.options["refine_check"], bool):
            raise ValueError(f"refine_check={self.options['refine_check']!r}; allowed: true (the frame's measured "
                             "points decide how far to trust the refiner), false (the refiner as trained).")
        self.refiner = refiner if refine is not False else None
        from depthkit.complete.decoding import DECODE_MODES

        if self.options["decode"] not in DECODE_MODES:  # before the warning below, which would call it ignored
            raise ValueError(f"decode={self.options['decode']!r}; allowed: constrained (the answer template forced, "
                             "digits only) or free (greedy over the whole vocabulary, as plain generate()).")
        if "decode" in options and settings.readout != "text":  # only the text readout decodes digits
            import warnings

            from depthkit.io import DepthkitWarning

            warnings.warn(f"complete stage option decode={options['decode']!r} has no effect: this checkpoint reads "
                          f"its answers with readout={settings.readout!r}, which decodes no digits (only "
                          "readout='text' does). Leave decode out.", DepthkitWarning, stacklevel=2)
        self.settings = settings
        self.prompt_config = settings.prompt_config()
        self.readout = settings.readout
        self.engine = CompletionEngine(model, processor, self.prompt_config, readout=self.readout,
                                       residual_head=residual_head, batch_size=int(self.options["batch_size"]),
                                       memory_budget_mb=float(self.options["memory_budget_mb"]),
                                       decode=self.options["decode"],
                                       confidence_tolerance=float(self.options["confidence_tolerance"]))
        self.last_stats: dict = {}

    @classmethod
    def from_checkpoint(cls, path, device: str = "cpu", dtype: str = "float32", attn_implementation: str | None = None,
                        **options) -> CompleteVLMStage:
        """Load ``<checkpoint>/complete`` (:func:`depthkit.complete.checkpoint.load_complete`) and wrap it."""
        from depthkit.complete.checkpoint import load_complete

        _check_options(options, loading=True)  # before the weights load
        loaded = load_complete(path, device=device, dtype=dtype, attn_implementation=attn_implementation)
        return cls(loaded.model, loaded.processor, loaded.settings, loaded.residual_head, loaded.refiner, **options)

    def run(self, image: np.ndarray, sparse: np.ndarray, depth: np.ndarray | None = None) -> StageResult:
        """Complete ``sparse`` (HxW metres, 0 = missing) for ``image`` (HxWx3 uint8 RGB); ``depth`` is unused.

        Inputs whose longest side exceeds ``max_working_side`` (default 2048 px, see
        :data:`depthkit.checkpoints.MAX_WORKING_SIDE`) are completed at that size — the image area-resized, the
        measured points scattered to their scaled pixels — and the maps upsampled (bilinear; masks nearest), so the
        work and memory of the fill stay bounded (masks follow the working pixel under each pixel's centre); the
        Pipeline then restores every measured pixel exactly.
        ``last_stats["working_size"]`` records the size used."""
        import cv2

        from depthkit.checkpoints import working_side
        from depthkit.io import resize_sparse

        side = working_side(None, sparse.shape, cap=int(self.options["max_working_side"]))
        if side is None:
            return self._count_placed(self._complete(image, sparse))
        h, w = sparse.shape
        small = (max(1, round(h * side / max(h, w))), max(1, round(w * side / max(h, w))))
        res = self._complete(cv2.resize(image, small[::-1], interpolation=cv2.INTER_AREA),
                             resize_sparse(sparse, small, working_size=True))  # the Pipeline restores them
        res.depth = cv2.resize(res.depth, (w, h), interpolation=cv2.INTER_LINEAR)
        res.confidence = np.clip(cv2.resize(res.confidence, (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
        res.confidence[sparse > 0] = 1.0
        res.extras = {k: _under_centres(v, (h, w)) for k, v in res.extras.items()}
        self.last_stats["working_size"] = small
        return self._count_placed(res)

    def _count_placed(self, res: StageResult) -> StageResult:
        """Record ``last_stats["placed_pixels"]``: the pixels of ``res.extras["placed"]``, at the input's size (the
        fills' own counts are at the working size)."""
        if "placed" in res.extras:
            self.last_stats["placed_pixels"] = int(np.count_nonzero(res.extras["placed"]))
        return res

    def _complete(self, image: np.ndarray, sparse: np.ndarray) -> StageResult:
        from depthkit.complete.query_plan import (
            confidence_map,
            fill_dense,
            fill_residual,
            fuse_answers,
            plan_queries,
            prior_map,
        )

        start = time.perf_counter()  # image and sparse come checked by the Pipeline (or a trainer's reader)
        opts = self.options
        plan = plan_queries(sparse, opts["query_stride"], opts["query_budget"])
        rows, cols = plan["rows"], plan["cols"]
        if opts["query_stride"] is not None and plan["stride"] != opts["query_stride"] and not self._stride_said:
            import warnings

            from depthkit.io import DepthkitWarning

            self._stride_said = True  # once per stage: every frame of a batch run would say it again
            warnings.warn(f"complete stage option query_stride={opts['query_stride']} was raised to "
                          f"{plan['stride']} px for a {sparse.shape[1]}x{sparse.shape[0]} frame so that its queries "
                          f"fit query_budget={opts['query_budget']}; to ask the missing pixels on a "
                          f"{opts['query_stride']} px grid, set query_budget to null (no cap) or higher.", DepthkitWarning, stacklevel=2)
        prior_method = self.prompt_config.prompt_prior
        fusion = opts["fusion"]
        measured = bool((np.isfinite(sparse) & (sparse > 0)).any())
        if not measured and prior_method != "none":
            raise ValueError(f"the sparse map ({sparse.shape[0]}x{sparse.shape[1]}) has no measured pixel (every value "
                             f"is 0, NaN or negative), but this completer writes an interpolated prior "
                             f"(prompt_prior={prior_method!r}) into every query, which needs at least one measured "
                             "point; pass a sparse map with measured depths (metres > 0).")
        if not measured and fusion != "none":  # no classical interpolation to fall back on: answers as given
            fusion = "none"
        classical = None
        residual = opts["fill"] == "residual" and measured  # corrections of the classical map (without queries: it)
        if residual or (rows.size and (prior_method != "none" or fusion != "none")):
            classical = prior_map(image, sparse, prior_method if prior_method != "none" else "guided")
        n = rows.size
        stats = {"stride": plan["stride"], "n_queries": int(n), "n_unparseable": 0, "fusion": fusion,
                 "fill": "residual" if residual else "anchors"}
        if n:
            try:
                prefix = self.engine.encode(image, sparse)
            except ValueError as exc:  # the processor's own limit, said with what to do
                if "aspect ratio" not in str(exc):
                    raise
                h, w = sparse.shape
                raise ValueError(f"the learned completer's vision encoder (Qwen2.5-VL's processor) refuses this "
                                 f"{h}x{w} image ({exc}). Crop it into less elongated pieces, complete it with a "
                                 "classical method (--method guided), or ask no queries (--option "
                                 "complete.query_budget=0: the dense refiner on guided).") from exc
            priors = classical[rows, cols] if prior_method != "none" else None
            answers = self.engine.answer(prefix, rows, cols, priors)
            stats.update(answers.stats)
            values = fuse_answers(answers.values, answers.confidence, answers.ok,
                                  None if classical is None else classical[rows, cols], fusion,
                                  float(opts["fusion_threshold"]))
            conf_q, ok = answers.confidence, answers.ok
        else:
            values = np.zeros(0)
            conf_q, ok = np.zeros(0, np.float32), np.zeros(0, bool)
        if residual:
            dense = fill_residual(image, sparse, rows, cols, values, classical)
        else:
            dense = fill_dense(image, sparse, rows, cols, values)
        stats["refined"] = self.refiner is not None
        if self.refiner is not None:
            t_refine = time.perf_counter()
            strength = 1.0
            if opts["refine_check"] and measured:
                from depthkit.complete.refiner_check import check_refiner

                check = check_refiner(self.refiner, image, sparse)
                strength = check.strength
                stats["refine_check"] = check.summary()
            dense = self.refiner.refine(image, sparse, dense, strength=strength)
            stats["refine_strength"] = strength
            stats["refine_seconds"] = time.perf_counter() - t_refine
        placed = None  # the pixels a rule below sets (float32 0/1 in the result's extras)
        if opts["occlusion_fill"] is not None:
            from depthkit.complete.occlusion import fill_found_runs, fill_occlusions, occlusion_evidence

            if opts["occlusion_fill"] == "auto":
                evidence = occlusion_evidence(sparse)
                dense, filled = fill_found_runs(dense, evidence)
                stats["occlusion_side"] = evidence.side
            else:
                dense, filled = fill_occlusions(dense, sparse, opts["occlusion_fill"])
            stats["occlusion_filled"] = int(filled.sum())
            placed = filled
        if opts["hole_fill"] is not None:
            from depthkit.complete.hole_fill import fill_edge_holes

            dense, filled = fill_edge_holes(dense, sparse, image)
            stats["hole_filled"] = int(filled.sum())
            placed = filled if placed is None else placed | filled
        decay = opts["confidence_decay_px"]
        conf = confidence_map(sparse, rows, cols, conf_q, ok, None if decay is None else float(decay), dense=dense,
                              tolerance=float(opts["confidence_tolerance"]))
        query_mask = np.zeros(sparse.shape, np.float32)
        query_mask[rows, cols] = 1.0
        query_conf = np.zeros(sparse.shape, np.float32)
        query_conf[rows, cols] = np.where(ok, conf_q, 0.0)
        bad = np.zeros(sparse.shape, np.float32)
        bad[rows[~ok], cols[~ok]] = 1.0
        stats["seconds"] = time.perf_counter() - start
        self.last_stats = stats
        extras = {"query_mask": query_mask, "query_confidence": query_conf, "unparseable_mask": bad}
        if placed is not None:
            extras["placed"] = placed.astype(np.float32)
        return StageResult(depth=dense, confidence=conf, extras=extras, seconds=stats["seconds"])

    def __repr__(self) -> str:
        """The checkpoint's settings, the query plan, whether the refiner runs and every option not at its default
        (what a run summary needs to tell two runs' settings apart)."""
        cfg = self.prompt_config
        shown = ("query_budget", "query_stride", "refine")
        changed = "".join(f", {k}={v!r}" for k, v in sorted(self.options.items())
                          if k not in shown and v != STAGE_OPTIONS[k])
        return (f"CompleteVLMStage(readout={self.readout!r}, pixel_reference={cfg.pixel_reference!r}, "
                f"prompt_prior={cfg.prompt_prior!r}, query_budget={self.options['query_budget']}, "
                f"query_stride={self.options['query_stride']}, refiner={'on' if self.refiner else 'off'}{changed})")
