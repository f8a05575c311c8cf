"""vtcc: end-to-end deep image clustering (VTCC, Contrastive Clustering, SCAN) with Lightning and Hydra."""

from importlib import metadata

try:
    __version__ = metadata.version("vtcc")
except metadata.PackageNotFoundError:  # a checkout on PYTHONPATH, not installed
    __version__ = "0+unknown"
