from vtcc.data.datasets import ImageArrays, load_digits
from vtcc.data.in_memory import InMemoryDataModule
from vtcc.data.transforms import EvalTransform, TwinViewAugmentation, small_image_view

__all__ = [
    "EvalTransform",
    "ImageArrays",
    "InMemoryDataModule",
    "TwinViewAugmentation",
    "load_digits",
    "small_image_view",
]
