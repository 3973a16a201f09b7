"""spinal_bidsapp: a BIDS App for spinal cord MRI (cord reference per subject, templates)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("spinal_bidsapp")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
