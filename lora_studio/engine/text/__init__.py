"""The text family: LoRA / QLoRA for causal language models (transformers + peft).

model.py loads the base and puts the LoRA in; tokenize.py turns records into ids
and labels; data.py reads the job's records; samples.py generates during training;
train.py is the family's Trainee; export.py writes PEFT folders and merged models.
"""
import importlib


OOM_HINT = ("Lower training.batch_size (raise gradient_accumulation_steps to keep the "
            "effective batch), enable training.gradient_checkpointing, lower "
            "dataset.max_seq_length, or load the base in 4-bit (model.load_in_4bit).")

__all__ = ["OOM_HINT", "export", "prepare"]


def __getattr__(name: str):
    """export and prepare load torch and transformers' models: only when asked for, so
    the token view's child (token_view.py) can use the tokenizing code without them.
    (Once imported, the export submodule stands at .export: see families.family_entry.)"""
    if name in ("export", "prepare"):
        return getattr(importlib.import_module(f".{'train' if name == 'prepare' else name}",
                                               __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
