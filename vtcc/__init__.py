"""vtcc: end-to-end deep image clustering (VTCC, Contrastive Clustering, SCAN) with Lightning and Hydra."""

from importlib import metadata

from vtcc import errors

try:
    __version__ = metadata.version("vtcc")
except metadata.PackageNotFoundError:  # a checkout on PYTHONPATH, not installed
    __version__ = "0+unknown"


def __getattr__(name: str):
    """``vtcc.Clusterer`` without importing torch and Lightning at ``import vtcc``."""
    if name == "Clusterer":
        from vtcc.api import Clusterer

        return Clusterer
    raise AttributeError(f"module 'vtcc' has no attribute {name!r}")


__all__ = ["Clusterer", "__version__", "errors"]
