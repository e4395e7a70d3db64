"""The text family: LoRA / QLoRA for causal language models (transformers + peft).

model.py loads the base and puts the LoRA in; tokenize.py turns records into ids
and labels; data.py reads the job's records; samples.py generates during training;
train.py is the family's Trainee; export.py writes PEFT folders and merged models.
"""
from .export import export
from .train import prepare

OOM_HINT = ("Lower training.batch_size (raise gradient_accumulation_steps to keep the "
            "effective batch), enable training.gradient_checkpointing, lower "
            "dataset.max_seq_length, or load the base in 4-bit (model.load_in_4bit).")

__all__ = ["OOM_HINT", "export", "prepare"]
