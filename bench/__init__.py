"""wsolbench: one harness for weakly-supervised object localization."""
__version__ = "0.1.0"

from bench._ext import EXTENSION_FLAVOUR  # noqa: E402,F401  (loads the custom ops once)
