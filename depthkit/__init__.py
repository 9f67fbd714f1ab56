"""depthkit: dense, metric, sharp depth from an RGB image plus sparse depth.

Two stages chained by one :class:`Pipeline`: ``complete`` (depth completion) and ``sharpen`` (SharpDepth).
Importing the package is cheap: torch, transformers and diffusers are imported only where a stage needs them.
"""

__version__ = "0.1.0"

__all__ = ["Pipeline", "DepthOutput", "StageResult", "__version__"]


def __getattr__(name):  # lazy: keep `import depthkit` and `depthkit --help` fast
    if name in ("Pipeline", "DepthOutput", "StageResult"):
        from depthkit import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'depthkit' has no attribute {name!r}")


def __dir__():  # the lazy names too, for tab completion and help()
    return sorted(set(globals()) | set(__all__))
