"""What the optimizers of a job need besides torch: the optional packages that
provide some of them, and which ones set their own step size or schedule. Read by
validation (in the window's process, so nothing here imports those packages) and
by the engine."""
from __future__ import annotations

import importlib.util

# optimizer -> (package to import, its class). `pip install "lora-studio[optimizers]"` installs them.
OPTIONAL_OPTIMIZERS: dict[str, tuple[str, str]] = {
    "Prodigy": ("prodigyopt", "Prodigy"),
    "DAdaptAdam": ("dadaptation", "DAdaptAdam"),
    "AdamWScheduleFree": ("schedulefree", "AdamWScheduleFree"),
}
INSTALL_OPTIMIZERS = 'pip install "lora-studio[optimizers]"'

# They estimate the step size themselves; the learning rate multiplies it (1.0 is their default).
ADAPTIVE = ("Prodigy", "DAdaptAdam")
# kohya warns below this rate for them: "set learning rate around 1.0".
ADAPTIVE_LR_LOW = 0.1
# They schedule the rate themselves (warmup included): the LR scheduler is not used.
SCHEDULE_FREE = ("AdamWScheduleFree",)


def missing_package(optimizer: str) -> str | None:
    """The package ``optimizer`` needs when it is not installed, else None."""
    package = OPTIONAL_OPTIMIZERS.get(optimizer, (None,))[0]
    if package is None or importlib.util.find_spec(package) is not None:
        return None
    return package
