"""The text family's side of a run: a causal language model with a LoRA (optionally
on a 4-/8-bit base, QLoRA), trained on the cross-entropy of its label tokens."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ...config.schema import JobConfig
from ...fsutil import atomic_write_text
from ...runs.events import event
from ...runs.item_loss import dataset_root, record_key
from ..core.family import Exported, RunContext
from ..core.item_losses import ItemLossMeter
from ..core.metadata import training_metadata
from ..core.order import chunks, epoch_order
from .data import held_out, load_dataset
from .eval_generation import HeldOutPrompt, generation_scores, job_prompts
from .export import copy_adapter, write_peft_adapter
from .model import (build_peft_model, initial_adapter, load_base_model, load_tokenizer,
                    loraplus_groups, resolve_model)
from .packing import collate_packed, pack, padding_share
from .token_store import lengths_of
from .samples import generate_samples
from .tokens import IGNORE, Encoded, collate, template_in_use


def label_count(item: Encoded) -> int:
    """Tokens whose prediction is in the loss: every label but the first (nothing
    predicts it) that is not IGNORE."""
    return sum(label != IGNORE for label in item.labels[1:])


def causal_lm_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over the label tokens, in fp32."""
    shifted = logits[:, :-1, :].float()
    return F.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=IGNORE, reduction="sum")


def record_losses(logits: torch.Tensor, labels: torch.Tensor, owners: torch.Tensor | None,
                  n_records: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed loss as causal_lm_loss_sum, each record's mean loss over its label
    tokens). ``owners``: the record (0 .. n_records-1) each position belongs to, None
    when each row is one record. All on the device: no count comes back to the host."""
    shifted = logits[:, :-1, :].float()
    targets = labels[:, 1:]
    tokens = F.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), targets.reshape(-1),
                             ignore_index=IGNORE, reduction="none").view_as(targets)
    labelled = (targets != IGNORE).float()
    if owners is None:
        sums, counts = tokens.sum(1), labelled.sum(1)
    else:
        owner = owners[:, 1:].reshape(-1)
        sums = tokens.new_zeros(n_records).index_add_(0, owner, tokens.reshape(-1))
        counts = tokens.new_zeros(n_records).index_add_(0, owner, labelled.reshape(-1))
    return tokens.sum(), sums / counts.clamp(min=1)


def padded_forward(model, items: list[Encoded], pad_id: int, device
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(logits, batch) of records padded to the longest, with an attention mask."""
    batch = collate(items, pad_id)
    logits = model(input_ids=batch["input_ids"].to(device, non_blocking=True),
                   attention_mask=batch["attention_mask"].to(device, non_blocking=True)).logits
    return logits, batch


def padded_loss_sum(model, items: list[Encoded], pad_id: int, device) -> torch.Tensor:
    """The summed loss of records padded to the longest."""
    logits, batch = padded_forward(model, items, pad_id, device)
    return causal_lm_loss_sum(logits, batch["labels"].to(device, non_blocking=True))


@dataclass
class TextTrainee:
    job: JobConfig
    ctx: RunContext
    model: Any                      # the PeftModel
    tokenizer: Any
    data: list[Encoded]
    use_template: bool
    initial: dict | None = None     # a PiSSA / OLoRA adapter before training (export.py)
    eval_data: list[Encoded] = field(default_factory=list)  # held out: the eval loss
    eval_prompts: list[HeldOutPrompt] = field(default_factory=list)  # and generation metrics
    family: str = "text"
    started_facts: dict = field(default_factory=dict)
    item_losses: ItemLossMeter | None = None   # each record's loss (item_loss_meter)

    def __post_init__(self):
        if self.job.network.loraplus_lr_ratio:
            self.param_groups = loraplus_groups(self.model, self.job)
        else:
            self.param_groups = [{"params": [p for p in self.model.parameters()
                                             if p.requires_grad]}]
        # Packed: a batch holds rows of records (packing.py); else a batch holds records.
        self.rows = pack(list(lengths_of(self.data)),
                         self.job.dataset.max_seq_length) if self.job.dataset.packing else None

    @property
    def dataset_size(self) -> int:
        return len(self.data)

    def epoch_batches(self, epoch: int) -> list:
        units = len(self.rows) if self.rows is not None else len(self.data)
        order = epoch_order(units, epoch, self.job.training.seed)
        return chunks(order, self.job.training.batch_size)

    def _records(self, indices) -> list[int]:
        return [j for i in indices for j in self.rows[i]] if self.rows is not None else indices

    def batch_items(self, indices) -> int:
        return sum(label_count(self.data[i]) for i in self._records(indices))

    def eval_batches(self) -> list:
        return chunks(list(range(len(self.eval_data))), self.job.training.batch_size)

    def eval_items(self, indices) -> int:
        return sum(label_count(self.eval_data[i]) for i in indices)

    def eval_loss_sum(self, model, indices) -> torch.Tensor:
        return padded_loss_sum(model, [self.eval_data[i] for i in indices],
                               self.tokenizer.pad_token_id, self.ctx.device)

    def eval_generate(self, step: int) -> dict[str, float]:
        """BLEU, ROUGE-L and exact match of greedy answers to the held-out prompts."""
        if not self.eval_prompts:
            return {}
        return generation_scores(self.model, self.tokenizer, self.eval_prompts, self.ctx.device)

    def padding_log(self) -> dict:
        """How much of what the model sees is padding, with and without packing."""
        lengths = list(lengths_of(self.data))
        size = self.job.training.batch_size
        single = chunks([(i,) for i in epoch_order(len(self.data), 0, self.job.training.seed)],
                        size)
        packed = chunks(pack(lengths, self.job.dataset.max_seq_length), size)
        without, with_ = padding_share(single, lengths), padding_share(packed, lengths)
        return event("log", level="info", padding_share=round(without, 4),
                     packed_padding_share=round(with_, 4), packing=self.rows is not None,
                     message=f"Padding: {without:.0%} of the tokens in a batch without packing, "
                             f"{with_:.0%} with packing (dataset.packing is "
                             f"{'on' if self.rows is not None else 'off'}).")

    def _forward(self, model, indices) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(logits, labels, owners) of a micro-batch; owners: the record of the batch
        (in _records order) each position of a packed row belongs to, None unpacked (a
        row is a record)."""
        device = self.ctx.device
        if self.rows is not None:
            batch = collate_packed([[self.data[j] for j in self.rows[i]] for i in indices],
                                   self.tokenizer.pad_token_id)
            logits = model(input_ids=batch["input_ids"].to(device, non_blocking=True),
                           position_ids=batch["position_ids"].to(device, non_blocking=True),
                           use_cache=False).logits
            return logits, batch["labels"], batch["records"]
        logits, batch = padded_forward(model, [self.data[i] for i in indices],
                                       self.tokenizer.pad_token_id, device)
        return logits, batch["labels"], None

    def loss_sum(self, model, indices) -> torch.Tensor:
        device = self.ctx.device
        logits, labels, owners = self._forward(model, indices)
        labels = labels.to(device, non_blocking=True)
        if self.item_losses is None:
            return causal_lm_loss_sum(logits, labels)
        records = self._records(indices)
        if owners is not None:
            owners = owners.to(device, non_blocking=True)
        total, means = record_losses(logits, labels, owners, len(records))
        self.item_losses.add(records, means)
        return total

    def set_train(self, mode: bool) -> None:
        self.model.train(mode)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict
        return get_peft_model_state_dict(self.model)

    def load_trainable_state(self, tensors: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict
        set_peft_model_state_dict(self.model, tensors)

    def sample(self, step: int) -> None:
        out = self.job.output
        texts = generate_samples(self.model, self.tokenizer, out.sample_prompts,
                                 use_template=self.use_template,
                                 max_new_tokens=out.sample_max_new_tokens, device=self.ctx.device)
        path = self.ctx.run.samples / f"step-{step:06d}.txt"
        atomic_write_text(path, "".join(f"### {t['prompt']}\n{t['text']}\n\n" for t in texts))
        self.ctx.emit(event("sample", step=step, path=str(path), kind="text", samples=texts))

    def write_final(self, step: int, steps_per_epoch: int, started_at: float) -> list[Exported]:
        from ...fsutil import sha256_file
        job, run = self.job, self.ctx.run
        metadata = training_metadata(job, family="text", steps=step, dataset_size=len(self.data),
                                     base_model=job.model.path)
        write_peft_adapter(self.model, run.final, metadata, job.model.path, self.initial)
        return [Exported("peft", path, sha256_file(path))
                for path in copy_adapter(run.final, run.exports / job.output.output_name)]


def item_loss_meter(job: JobConfig, data, device) -> ItemLossMeter | None:
    """Records keyed by file and line; a streamed dataset's records stay on disk and
    carry no origin, so it records none."""
    if not isinstance(data, list) or not all(e.origin for e in data):
        return None
    root = dataset_root(job.dataset.path)
    return ItemLossMeter([record_key(*e.origin, root) for e in data], "text", root, device)


def prepare(job: JobConfig, ctx: RunContext) -> TextTrainee:
    ctx.phase("loading the tokenizer")
    info = resolve_model(job)
    tokenizer = load_tokenizer(info.path)
    use_template = template_in_use(tokenizer, job.dataset.chat_template)
    data, eval_data = held_out(job, load_dataset(job, tokenizer, ctx.emit, ctx.phase), tokenizer,
                               ctx.emit, ctx.phase)
    ctx.phase("loading the model")
    model = build_peft_model(job, info, load_base_model(job, info.path))
    trainee = TextTrainee(job, ctx, model, tokenizer, data, use_template,
                          initial_adapter(job, model), eval_data,
                          job_prompts(job, eval_data, tokenizer, ctx.emit),
                          item_losses=item_loss_meter(job, data, ctx.device))
    ctx.emit(trainee.padding_log())
    return trainee
