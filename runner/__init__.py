"""gmrun: continental Sentinel-2 geomedian + MAD mosaics, one Kubernetes Job per tile."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gmrun")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"
