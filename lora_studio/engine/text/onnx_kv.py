"""The decoder graph with its KV cache, in the layout Optimum, onnxruntime-genai and
transformers.js read: inputs input_ids, attention_mask (past + new tokens),
position_ids and past_key_values.{i}.key / .value (batch, kv heads, past length, head
dim; length 0 for the first call), outputs logits and present.{i}.key / .value (past +
new tokens). Checked the way a generator uses it: a prefill from an empty cache, then
one decoding step fed the prefill's own present tensors, each against the merged
PyTorch model run on the whole sequence without a cache."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

INPUTS = ("input_ids", "attention_mask", "position_ids")
# A cache length the graph is traced with; any other (0 included) runs the same graph.
TRACE_PAST = 3


def cache_names(layers: int, prefix: str) -> list[str]:
    return [f"{prefix}.{i}.{part}" for i in range(layers) for part in ("key", "value")]


def _kv_shape(config) -> tuple[int, int]:
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return heads, head_dim


def empty_cache(config, batch: int, dtype: torch.dtype, length: int = 0) -> list[torch.Tensor]:
    heads, head_dim = _kv_shape(config)
    return [torch.zeros(batch, heads, length, head_dim, dtype=dtype)
            for _ in range(2 * config.num_hidden_layers)]


def position_ids(attention_mask: torch.Tensor, past: int = 0) -> torch.Tensor:
    """Positions counted over the real tokens only, as generate() does for a left-padded
    batch (padding gets 1; it is masked out)."""
    full = attention_mask.long().cumsum(-1) - 1
    return full.masked_fill(attention_mask == 0, 1)[:, past:]


class _WithPast(torch.nn.Module):
    """(input_ids, attention_mask, position_ids, *past) -> (logits, *present)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, *past):
        from transformers import DynamicCache
        # No config: every layer keeps its whole cache (a sliding-window model's window is
        # in the attention mask), so present is always past + new tokens long.
        cache = DynamicCache(ddp_cache_data=list(zip(past[0::2], past[1::2])))
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         position_ids=position_ids, past_key_values=cache, use_cache=True)
        present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (out.logits, *present)


def export_graph_with_past(model, example: dict[str, torch.Tensor], path: Path,
                           opset: int) -> None:
    layers = model.config.num_hidden_layers
    ids = example["input_ids"]
    dtype = next(model.parameters()).dtype
    past = [torch.randn_like(t) for t in empty_cache(model.config, ids.shape[0], dtype,
                                                     TRACE_PAST)]
    mask = torch.cat([torch.ones(ids.shape[0], TRACE_PAST, dtype=torch.long),
                      example["attention_mask"]], dim=1)
    args = (ids, mask, position_ids(mask, TRACE_PAST), *past)
    past_names, present_names = cache_names(layers, "past_key_values"), cache_names(layers,
                                                                                    "present")
    axes = {"input_ids": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
            "position_ids": {0: "batch_size", 1: "sequence_length"},
            "logits": {0: "batch_size", 1: "sequence_length"},
            **{n: {0: "batch_size", 2: "past_sequence_length"} for n in past_names},
            **{n: {0: "batch_size", 2: "total_sequence_length"} for n in present_names}}
    # The tracer warns of every Python branch on a shape; the check on other lengths, an
    # empty cache and a padded batch is what shows the graph is right.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_WithPast(model), args, str(path), dynamo=False, opset_version=opset,
                          input_names=[*INPUTS, *past_names],
                          output_names=["logits", *present_names], dynamic_axes=axes)


def _run(session, names: list[str], ids, mask, positions, past) -> tuple[torch.Tensor, list]:
    feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(),
            "position_ids": positions.numpy(), **{n: t.numpy() for n, t in zip(names, past)}}
    logits, *present = session.run(None, feed)
    return torch.from_numpy(logits).float(), [torch.from_numpy(t) for t in present]


def _reference(model, ids, mask) -> torch.Tensor:
    return model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                 use_cache=False).logits.float()


def compare_with_past(session, reference, batches, dtype: torch.dtype) -> dict:
    """onnxruntime's logits against ``reference`` (the merged fp32 model) on the real
    positions of each batch's prefill, and on one decoding step (the token the merged
    model picks next) fed the prefill's present tensors."""
    names = cache_names(reference.config.num_hidden_layers, "past_key_values")
    diffs = {"prefill": 0.0, "step": 0.0}
    scale, same, total = 0.0, 0, 0
    with torch.no_grad():
        for batch in batches:
            ids, mask = batch["input_ids"], batch["attention_mask"]
            want = _reference(reference, ids, mask)
            got, present = _run(session, names, ids, mask, position_ids(mask),
                                empty_cache(reference.config, ids.shape[0], dtype))
            real = mask.bool()
            nxt = want[:, -1].argmax(-1, keepdim=True)
            longer = torch.cat([mask, torch.ones_like(nxt)], dim=1)
            want_step = _reference(reference, torch.cat([ids, nxt], dim=1), longer)[:, -1]
            got_step, _ = _run(session, names, nxt, longer, position_ids(longer, ids.shape[1]),
                               present)
            got_step = got_step[:, -1]
            diffs["prefill"] = max(diffs["prefill"], float((got[real] - want[real]).abs().max()))
            diffs["step"] = max(diffs["step"], float((got_step - want_step).abs().max()))
            scale = max(scale, float(want[real].abs().max()), float(want_step.abs().max()))
            same += int((got[real].argmax(-1) == want[real].argmax(-1)).sum())
            same += int((got_step.argmax(-1) == want_step.argmax(-1)).sum())
            total += int(real.sum()) + ids.shape[0]
    scale = max(scale, 1e-12)
    return {"max_abs_diff": max(diffs.values()), "largest_logit": scale,
            "relative_diff": max(diffs.values()) / scale,
            "prefill_relative_diff": diffs["prefill"] / scale,
            "step_relative_diff": diffs["step"] / scale, "decode_steps": 1,
            "same_next_token": same / max(total, 1)}
