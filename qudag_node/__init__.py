"""qudag-node: a node daemon for the QuDAG testnet."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qudag-node")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
