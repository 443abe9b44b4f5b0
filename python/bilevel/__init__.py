"""bilevel: two-level training of linear models with binary cross-entropy on any GPU.

The engine is Rust (wgpu compute shaders, cross-checked against a CPU reference); this package
puts it behind a scikit-learn estimator, :class:`BilevelClassifier`.
"""

import os

# Mesa's Vulkan device-select layer opens a Wayland connection and, without XDG_RUNTIME_DIR,
# prints an error on every start; bilevel picks its adapter itself (as the command line does).
if not any(os.environ.get(v) for v in ("XDG_RUNTIME_DIR", "NODEVICE_SELECT", "MESA_VK_DEVICE_SELECT")):
    os.environ["NODEVICE_SELECT"] = "1"

from .estimator import BilevelClassifier, load  # noqa: E402

__all__ = ["BilevelClassifier", "load"]
