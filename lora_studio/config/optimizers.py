"""What the optimizers of a job need besides torch: the optional packages that
provide some of them, and which ones set their own step size or schedule. Read by
validation (in the window's process, so nothing here imports those packages) and
by the engine."""
from __future__ import annotations

import importlib.util
from typing import Any

from .schema import OptimizerConfig

# optimizer -> (package to import, its class). `pip install "lora-studio[optimizers]"` installs them.
OPTIONAL_OPTIMIZERS: dict[str, tuple[str, str]] = {
    "Prodigy": ("prodigyopt", "Prodigy"),
    "DAdaptAdam": ("dadaptation", "DAdaptAdam"),
    "AdamWScheduleFree": ("schedulefree", "AdamWScheduleFree"),
}
INSTALL_OPTIMIZERS = 'pip install "lora-studio[optimizers]"'
# bitsandbytes' 8-bit optimizers, by their class name in bitsandbytes.optim (CUDA only).
BITSANDBYTES_OPTIMIZERS = ("AdamW8bit", "PagedAdamW8bit", "Lion8bit")

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

# Settings only some optimizers take: OptimizerConfig field (also the keyword of the
# optimizer's class) -> {optimizer that takes it: the class's own default}. The engine
# passes them on; a LoRA's ss_optimizer lists those that differ from the class's default
# (what a kohya user types); validation names one changed for an optimizer that ignores it.
OPTIMIZER_OPTIONS: dict[str, dict[str, Any]] = {
    "d_coef": {"Prodigy": 1.0},
    "decouple": {"Prodigy": True, "DAdaptAdam": False},
    "use_bias_correction": {"Prodigy": False, "DAdaptAdam": False},
    "safeguard_warmup": {"Prodigy": False},
}
# beta1 / beta2: every optimizer but Adafactor, whose own values fill in the one not set.
DEFAULT_BETAS = (0.9, 0.999)
OWN_BETAS: dict[str, tuple[float, float]] = {"Lion8bit": (0.9, 0.99)}
NO_BETAS = ("Adafactor",)


def optimizer_options(cfg: OptimizerConfig) -> dict:
    """The keyword arguments of OPTIMIZER_OPTIONS and the betas that ``cfg.optimizer``
    takes."""
    name = cfg.optimizer
    out = {path: getattr(cfg, path) for path, takers in OPTIMIZER_OPTIONS.items()
           if name in takers}
    if name not in NO_BETAS and (cfg.beta1 is not None or cfg.beta2 is not None):
        own = OWN_BETAS.get(name, DEFAULT_BETAS)
        out["betas"] = (own[0] if cfg.beta1 is None else cfg.beta1,
                        own[1] if cfg.beta2 is None else cfg.beta2)
    return out


def changed_options(cfg: OptimizerConfig) -> dict:
    """optimizer_options that differ from the optimizer class's own defaults."""
    return {k: v for k, v in optimizer_options(cfg).items()
            if k == "betas" or v != OPTIMIZER_OPTIONS[k][cfg.optimizer]}


def unused_options(cfg: OptimizerConfig) -> list[str]:
    """The fields of OPTIMIZER_OPTIONS and the betas changed from their defaults that
    ``cfg.optimizer`` does not take."""
    defaults = OptimizerConfig.model_fields
    out = [path for path, takers in OPTIMIZER_OPTIONS.items()
           if cfg.optimizer not in takers and getattr(cfg, path) != defaults[path].default]
    if cfg.optimizer in NO_BETAS:
        out += [b for b in ("beta1", "beta2") if getattr(cfg, b) is not None]
    return out
