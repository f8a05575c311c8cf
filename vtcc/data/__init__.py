from vtcc.data.benchmarks import (
    DatasetNotFoundError,
    load_cifar10,
    load_cifar100_20,
    load_fashion_mnist,
    load_mnist,
    load_stl10,
)
from vtcc.data.datasets import ImageArrays, load_digits
from vtcc.data.folder import load_image_folder, load_npz
from vtcc.data.images import ClusteringData, ImageDataModule, ImageSettings
from vtcc.data.in_memory import InMemoryDataModule
from vtcc.data.streaming import StreamingFolderDataModule
from vtcc.data.transforms import (
    EvalTransform,
    TwinViewAugmentation,
    rgb_view,
    small_image_view,
    strong_view,
)

__all__ = [
    "ClusteringData",
    "DatasetNotFoundError",
    "EvalTransform",
    "ImageArrays",
    "ImageDataModule",
    "ImageSettings",
    "InMemoryDataModule",
    "TwinViewAugmentation",
    "load_cifar10",
    "load_cifar100_20",
    "load_digits",
    "load_fashion_mnist",
    "load_image_folder",
    "load_mnist",
    "load_npz",
    "load_stl10",
    "rgb_view",
    "StreamingFolderDataModule",
    "small_image_view",
    "strong_view",
]
