"""Floor 2: datasets (MNIST, Fashion-MNIST, CIFAR-10, image folders), scalers, augmentation,
and the batch iterator.

Loaders return ``((x_train, y_train), (x_test, y_test))`` with uint8 NHWC images and int64
labels. Pillow is imported only when image files are decoded.

Hostile input: a damaged or truncated archive raises :class:`CorruptArchiveError`; a file
declaring more decoded data than the limit raises :class:`DataLimitError` (raise the limit
with ``max_bytes=`` or ``$BNLAB_MAX_BYTES``, see :mod:`bnlab.data.limits`); labels and pixels
are range-checked, never cast; nothing is cached on error.
"""

from bnlab.data.archive import CorruptArchiveError
from bnlab.data.augment import ImageAugmenter
from bnlab.data.cifar import CIFAR10_CLASSES, load_cifar10
from bnlab.data.idx import IDXError, read_idx, write_idx
from bnlab.data.imagefolder import ImageFolderData, load_image_folder
from bnlab.data.iterator import BatchIterator
from bnlab.data.limits import DataLimitError
from bnlab.data.mnist import load_fashion_mnist, load_mnist
from bnlab.data.sources import describe_source
from bnlab.data.transforms import MinMaxScaler, NotFittedError, Standardizer

__all__ = [
    "BatchIterator",
    "CIFAR10_CLASSES",
    "CorruptArchiveError",
    "DataLimitError",
    "IDXError",
    "ImageAugmenter",
    "ImageFolderData",
    "MinMaxScaler",
    "NotFittedError",
    "Standardizer",
    "describe_source",
    "load_cifar10",
    "load_fashion_mnist",
    "load_image_folder",
    "load_mnist",
    "read_idx",
    "write_idx",
]
