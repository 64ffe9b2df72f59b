"""Datasets for ganhpo: MNIST, Fashion-MNIST, image folders and ``.npz`` files.

Everything is loaded into memory as uint8 [N, C, H, W] (:class:`ImageDataset`) and drawn in
random float batches in [-1, 1] on the training device by :class:`Batcher`.
"""

from __future__ import annotations

from ganhpo.data._batcher import Batcher
from ganhpo.data._dataset import (
    ImageDataset,
    from_unit_range,
    image_digest,
    image_hashes,
    to_unit_range,
)
from ganhpo.data._idx import read_idx, write_idx
from ganhpo.data._idx_datasets import locate_idx_dataset
from ganhpo.data._load import (
    DATASETS,
    HOLDOUT_SPLIT,
    dataset_names,
    dataset_size,
    has_test_split,
    holdout_indices,
    load_dataset,
)
from ganhpo.data._paths import resolve_data_dir, shipped_mnist_subset_dir
from ganhpo.data._write import check_image_output, save_images

__all__ = [
    "DATASETS",
    "HOLDOUT_SPLIT",
    "Batcher",
    "ImageDataset",
    "check_image_output",
    "dataset_names",
    "dataset_size",
    "from_unit_range",
    "has_test_split",
    "holdout_indices",
    "image_digest",
    "image_hashes",
    "load_dataset",
    "locate_idx_dataset",
    "read_idx",
    "resolve_data_dir",
    "save_images",
    "shipped_mnist_subset_dir",
    "to_unit_range",
    "write_idx",
]
