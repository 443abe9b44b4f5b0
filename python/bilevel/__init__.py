"""bilevel: two-level training of linear models with binary cross-entropy on any GPU.

The engine is Rust (wgpu compute shaders, cross-checked against a CPU reference); this package
puts it behind scikit-learn estimators: :class:`BilevelClassifier`, and
:class:`BilevelClassifierCV`, which cross-validates a grid of them in one pass over the data.
"""

import os

# Mesa's Vulkan device-select layer opens a Wayland connection and, without XDG_RUNTIME_DIR,
# prints an error on every start; bilevel picks its adapter itself (as the command line does).
if not any(os.environ.get(v) for v in ("XDG_RUNTIME_DIR", "NODEVICE_SELECT", "MESA_VK_DEVICE_SELECT")):
    os.environ["NODEVICE_SELECT"] = "1"

import json  # noqa: E402

from . import _native  # noqa: E402
from .cv import BilevelClassifierCV  # noqa: E402
from .estimator import BilevelClassifier, load  # noqa: E402

__all__ = ["BilevelClassifier", "BilevelClassifierCV", "check", "devices", "load"]


def devices():
    """The adapters wgpu offers, as ``bilevel devices --json`` lists them: each one's name,
    backend, limits, features, the plan each shape gets there, and ``chosen`` for the one
    bilevel uses (``WGPU_BACKEND``, ``WGPU_ADAPTER_NAME`` and ``WGPU_POWER_PREF`` choose)."""
    return json.loads(_native.devices())


def check():
    """``bilevel check``: every kernel and a few runs on the GPU against the CPU reference.
    Returns a dict: ``adapter``, ``checks`` (what, max_abs, max_rel, atol, rtol, pass),
    ``not_on_this_adapter`` and ``passed``."""
    return json.loads(_native.check())
