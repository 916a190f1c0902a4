"""Loads the compiled extension `bench._C`, which registers the custom ops under
`torch.ops.wsolbench`. Without it every op falls back to its pure-torch reference (correct,
slow) and a single warning names the build command."""
import warnings

import torch  # noqa: F401  (the extension links against libtorch: import it first)

BUILD_COMMAND = "pip install --no-build-isolation -e ."

try:
    from bench import _C  # noqa: F401

    EXTENSION_FLAVOUR = _C.flavour  # "cpu" or "cuda"
except ImportError as err:  # pragma: no cover - exercised only without a build
    EXTENSION_FLAVOUR = "missing"
    warnings.warn(
        f"wsolbench: the compiled extension bench._C could not be loaded ({err}); custom ops "
        f"use their slow pure-torch references. Build it from the repository root with: "
        f"{BUILD_COMMAND}",
        RuntimeWarning,
        stacklevel=2,
    )


def has_op(name: str) -> bool:
    """True when the compiled op `torch.ops.wsolbench.<name>` is available."""
    return EXTENSION_FLAVOUR != "missing" and hasattr(torch.ops.wsolbench, name)
