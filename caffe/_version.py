"""caffe.__version__: the installed protonet distribution's version."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("protonet")
except PackageNotFoundError:   # run from a source tree that was never installed
    __version__ = "0+unknown"
