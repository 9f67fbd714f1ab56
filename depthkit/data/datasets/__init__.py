"""Dataset readers for depth-completion benchmarks and training sets, in their distributed on-disk formats.

``build_dataset(name, root, split=..., **kw)`` builds a reader from :data:`DATASETS`; every reader is a
``torch.utils.data.Dataset`` whose items are dicts (see :mod:`depthkit.data.datasets._base`)::

    image HxWx3 uint8 RGB | sparse HxW float32 m (0 = missing) | depth HxW float32 GT m (0 = missing)
    valid HxW bool (GT inside the protocol's range) | intrinsics Intrinsics or None | name str | [edges HxW bool]

Evaluation readers (nyuv2, kitti_dc, void/void150/void500/void1500, ibims1, ddad) apply the protocol of the same
name (:data:`depthkit.data.protocols.PROTOCOLS`, Marigold-DC's), so ``build_dataset("nyuv2", root)`` returns
304x228 crops with 500 seeded GT points (or, from Conti's HDF5 pair, Marigold-DC's own 500). They also read
Marigold-DC's processed folders (``rgb/``, ``sparse/*.npy``, ``gt/*.npy``, ``intrinsics/``) as they are. Readers that
know several layouts of one dataset take a ``layout`` option (nyuv2: native / processed / h5; hypersim: raw /
marigold; ``"auto"`` by default). Training readers (hypersim, vkitti2, synthetic) draw sparse input with
:func:`depthkit.data.sparse.make_sparse`; image_folder yields unlabelled images. Each module documents its layout,
and a missing or malformed root raises :class:`DatasetLayoutError` (a ``ValueError``) naming the path, the layout
and where to get the data; an option a reader does not take raises a ``ValueError`` listing the ones it does.
"""

from __future__ import annotations

import inspect

from depthkit.data.datasets._base import DepthDataset, Sample, collate_items
from depthkit.data.datasets._ops import DatasetLayoutError, filter_local_outliers, marigold_dc_select
from depthkit.data.datasets.ddad import DDADDataset
from depthkit.data.datasets.hypersim import HypersimDataset, distance_to_planar, hypersim_intrinsics
from depthkit.data.datasets.ibims1 import IBims1Dataset
from depthkit.data.datasets.image_folder import ImageFolderDataset
from depthkit.data.datasets.kitti_dc import KITTIDCDataset
from depthkit.data.datasets.nyuv2 import NYUv2Dataset
from depthkit.data.datasets.synthetic import SyntheticDataset
from depthkit.data.datasets.vkitti2 import VKITTI2Dataset
from depthkit.data.datasets.void import VOID150Dataset, VOID500Dataset, VOID1500Dataset, VOIDDataset

__all__ = [
    "DATASETS", "build_dataset", "reader_options", "DepthDataset", "Sample", "DatasetLayoutError", "collate_items",
    "filter_local_outliers", "marigold_dc_select", "distance_to_planar", "hypersim_intrinsics",
    "NYUv2Dataset", "KITTIDCDataset", "VOIDDataset", "VOID150Dataset", "VOID500Dataset", "VOID1500Dataset",
    "IBims1Dataset", "DDADDataset", "HypersimDataset", "VKITTI2Dataset", "ImageFolderDataset", "SyntheticDataset",
]

DATASETS: dict[str, type[DepthDataset]] = {
    "nyuv2": NYUv2Dataset,
    "kitti_dc": KITTIDCDataset,
    "void": VOIDDataset,
    "void150": VOID150Dataset,
    "void500": VOID500Dataset,
    "void1500": VOID1500Dataset,
    "ibims1": IBims1Dataset,
    "ddad": DDADDataset,
    "hypersim": HypersimDataset,
    "vkitti2": VKITTI2Dataset,
    "image_folder": ImageFolderDataset,
    "synthetic": SyntheticDataset,
}


def reader_options(name: str) -> dict[str, object]:
    """The keyword options (name -> default) that the reader registered as ``name`` takes besides root and split."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}.")
    params = inspect.signature(DATASETS[name].__init__).parameters
    return {k: p.default for k, p in params.items() if k not in ("self", "root", "split")
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def build_dataset(name: str, root=None, split: str | None = None, **options) -> DepthDataset:
    """The reader registered as ``name`` for the dataset at ``root`` (ignored for ``synthetic``).

    ``split`` defaults to the split the dataset's protocol evaluates (test/val) or ``train`` for training sets;
    ``options`` go to the reader (e.g. ``density=500`` for void, ``layout="h5"`` for nyuv2, ``length=`` for
    synthetic; :func:`reader_options` lists them). An option the reader does not take raises a ``ValueError`` that
    lists the ones it does; the readers reject wrong values with a ``ValueError`` naming the allowed ones, and a
    value of a type a reader cannot use (a ``TypeError`` inside it) becomes a ``ValueError`` listing the options.
    """
    accepted = reader_options(name)
    listing = ", ".join(f"{k}={v!r}" for k, v in accepted.items())
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"dataset {name!r} does not take option(s) {', '.join(unknown)}; its options (with their "
                         f"defaults) are: {listing}. See help({DATASETS[name].__name__}).")
    try:
        return DATASETS[name](root, split=split, **options)
    except TypeError as exc:
        if not options:
            raise
        given = ", ".join(f"{k}={v!r}" for k, v in options.items())
        raise ValueError(f"dataset {name!r} could not use the options {given}: {exc}. Its options (with their "
                         f"defaults) are: {listing}.") from exc
