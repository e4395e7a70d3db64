"""Exact comparisons of training state: what each optimizer step is handed, and two
checkpoints tensor for tensor."""
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from lora_studio.engine.core.checkpoint import load_checkpoint


class Grads:
    """The gradients each optimizer step is given (after clipping), through torch's
    global step pre-hook."""

    def __init__(self):
        self.steps: list[list[torch.Tensor]] = []

    def __enter__(self):
        def hook(optimizer, args, kwargs):
            self.steps.append([p.grad.detach().clone() for group in optimizer.param_groups
                               for p in group["params"]])
        self._handle = register_optimizer_step_pre_hook(hook)
        return self

    def __exit__(self, *exc):
        self._handle.remove()

    def norms(self) -> list[float]:
        return [float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in step])))
                for step in self.steps]

    def assert_same_as(self, other: "Grads", rtol: float = 1e-5) -> None:
        """Step by step, tensor by tensor, within ``rtol`` of each tensor's largest
        element (float sums in another order differ most where values are tiny)."""
        assert len(self.steps) == len(other.steps)
        for mine, theirs in zip(self.steps, other.steps):
            assert len(mine) == len(theirs)
            for a, b in zip(mine, theirs):
                assert_close_to_scale(a, b, rtol)


def assert_close_to_scale(a: torch.Tensor, b: torch.Tensor, rtol: float) -> None:
    scale = max(a.abs().max().item(), b.abs().max().item())
    assert (a - b).abs().max().item() <= rtol * scale, ((a - b).abs().max().item(), scale)


def assert_same_checkpoint(a: Path, b: Path) -> None:
    """The trained tensors, the optimizer state and the schedule of two checkpoints are
    equal bit for bit."""
    first, second = load_checkpoint(a), load_checkpoint(b)
    assert first.step == second.step
    assert first.trainable.keys() == second.trainable.keys()
    for key, value in first.trainable.items():
        assert torch.equal(value, second.trainable[key]), key
    state_a, state_b = first.optimizer["state"], second.optimizer["state"]
    assert state_a.keys() == state_b.keys() and len(state_a) > 0
    for index, values in state_a.items():
        assert values.keys() == state_b[index].keys()
        for name, value in values.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(state_b[index][name])), \
                (index, name)
    assert first.optimizer["param_groups"] == second.optimizer["param_groups"]
    assert first.scheduler == second.scheduler
