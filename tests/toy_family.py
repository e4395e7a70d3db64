"""A toy model family for tests of the shared core: a linear model whose items weigh
differently, like records of different lengths, run through the real trainer."""
from pathlib import Path

import torch

from lora_studio.config.schema import JobConfig
from lora_studio.engine.core import trainer
from lora_studio.engine.core.order import chunks, epoch_order
from lora_studio.runs.layout import RunDir

N_ITEMS, DIM = 12, 5


class ToyTrainee:
    """Item i has input x[i], target y[i] and ``weight[i]`` loss items (think: label
    tokens); its loss is weight[i] * squared error, so a step's mean is by item."""
    family = "toy"
    started_facts: dict = {}

    def __init__(self, job: JobConfig, ctx):
        generator = torch.Generator().manual_seed(1234)
        self.x = torch.randn(N_ITEMS, DIM, generator=generator)
        self.y = torch.randn(N_ITEMS, 1, generator=generator) * 3
        self.weight = torch.tensor([1, 5, 2, 7, 1, 3, 4, 1, 6, 2, 2, 9])
        self.job, self.ctx = job, ctx
        self.model = torch.nn.Linear(DIM, 1)
        self.param_groups = [{"params": list(self.model.parameters())}]
        self.dataset_size = N_ITEMS
        self.epochs_asked: list[int] = []

    def epoch_batches(self, epoch):
        self.epochs_asked.append(epoch)
        order = epoch_order(N_ITEMS, epoch, self.job.training.seed)
        return chunks(order, self.job.training.batch_size)

    def batch_items(self, batch):
        return int(self.weight[list(batch)].sum())

    def loss_sum(self, model, batch):
        idx = list(batch)
        error = (model(self.x[idx]) - self.y[idx]).squeeze(1)
        return (self.weight[idx] * error.pow(2)).sum()

    def set_train(self, mode):
        self.model.train(mode)

    def trainable_state(self):
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def load_trainable_state(self, tensors):
        self.model.load_state_dict(tensors)

    def sample(self, step):
        pass

    def write_final(self, step, steps_per_epoch, started_at):
        return []


def toy_job(**sections) -> JobConfig:
    data = {"optimizer": {"learning_rate": 0.05, "lr_scheduler": "constant", "max_grad_norm": 0.0,
                          "weight_decay": 0.0},
            "training": {"max_steps": 3, "batch_size": 4, "seed": 7},
            "output": {"save_every_n_steps": 0}}
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return JobConfig.model_validate(data)


def run_toy(tmp_path: Path, job: JobConfig, name="run", stop=lambda: False, resume=None):
    events: list[dict] = []
    made: list[ToyTrainee] = []

    def prepare(job, ctx):
        made.append(ToyTrainee(job, ctx))
        return made[-1]

    result = trainer.train(job, RunDir(tmp_path / name).ensure(), events.append, stop, prepare,
                           resume)
    return result, events, made[-1]


def progress(events):
    return [e for e in events if e["type"] == "progress"]
