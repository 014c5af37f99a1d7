"""skiplab.data: datasets as whole uint8 tensors, batch augmentation as tensor ops, a resumable DDP-aware loader.

    from skiplab.data import load_dataset, BatchLoader, Augment
    ds = load_dataset("cifar10", "train", data_dir="../shared/data")       # decoded once, then cached
    train, val = ds.split(5000, seed=0)                                     # He et al. 2015's 45k/5k
    loader = BatchLoader(train, 128, shuffle=True, augment=Augment(crop_padding=4, flip=True), seed=0)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for x, y in loader: ...

Datasets: cifar10, cifar100 (python or binary release, folder or .tar.gz; cifar10 also as an ImageFolder tree or
archive), mnist, fashion_mnist (IDX, .gz or raw), imagefolder (any split/class/image tree), and the generated
synthetic, synthetic_seg and synthetic_digits.  ``list_datasets()`` lists them; ``dataset_info(name)`` says
which files each accepts and where they come from.
"""
from skiplab.data.augment import Augment, AugmentParams
from skiplab.data.dataset import ImageDataset, channel_stats
from skiplab.data.datasets import DatasetInfo, dataset_info, list_datasets, load_dataset, locate_data_dir
from skiplab.data.errors import CorruptDataError, DatasetNotFoundError, NonOfficialDataWarning
from skiplab.data.loader import BatchLoader
from skiplab.data.storage import cache_root, data_root

__all__ = [
    "Augment", "AugmentParams", "BatchLoader", "CorruptDataError", "DatasetInfo", "DatasetNotFoundError",
    "ImageDataset", "NonOfficialDataWarning", "cache_root", "channel_stats", "data_root", "dataset_info",
    "locate_data_dir",
    "list_datasets", "load_dataset",
]
