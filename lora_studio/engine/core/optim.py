"""The optimizer and learning-rate schedule a job asks for."""
from __future__ import annotations

import torch

from ...config.schema import OptimizerConfig
from .control import EngineError

BNB_OPTIMIZERS = {"AdamW8bit": "AdamW8bit", "PagedAdamW8bit": "PagedAdamW8bit",
                  "Lion8bit": "Lion8bit"}


def _bitsandbytes():
    try:
        import bitsandbytes
    except ImportError as exc:
        raise EngineError("config", f"The 8-bit optimizers need bitsandbytes ({exc}).",
                          "pip install bitsandbytes, or choose AdamW or Adafactor.") from exc
    return bitsandbytes


def build_optimizer(param_groups: list[dict], cfg: OptimizerConfig,
                    on_cuda: bool) -> torch.optim.Optimizer:
    """``param_groups``: torch-style groups (``{"params": [...]}``, optionally with their
    own ``"lr"``); groups without one use ``cfg.learning_rate``."""
    name, lr, wd = cfg.optimizer, cfg.learning_rate, cfg.weight_decay
    if name in BNB_OPTIMIZERS:
        if not on_cuda:
            raise EngineError("config", f"The {name} optimizer needs an NVIDIA GPU (bitsandbytes).",
                              "Choose optimizer.optimizer = AdamW (or Adafactor) to train on this "
                              "machine.")
        return getattr(_bitsandbytes().optim, BNB_OPTIMIZERS[name])(param_groups, lr=lr,
                                                                     weight_decay=wd)
    if name == "Adafactor":
        from transformers.optimization import Adafactor
        return Adafactor(param_groups, lr=lr, weight_decay=wd, scale_parameter=False,
                         relative_step=False, warmup_init=False)
    return torch.optim.AdamW(param_groups, lr=lr, weight_decay=wd)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimizerConfig, total_steps: int):
    """A LambdaLR stepped once per optimizer step."""
    from transformers import get_scheduler
    return get_scheduler(cfg.lr_scheduler, optimizer,
                         num_warmup_steps=min(cfg.lr_warmup_steps, total_steps),
                         num_training_steps=total_steps)
