"""The reference a text LoRA / QLoRA run is timed against: transformers' Trainer with
a PEFT LoRA, the way its documentation and PEFT's examples train one — the base
loaded in 4-bit NF4 (double quantisation, bf16 compute) when asked,
prepare_model_for_kbit_training, get_peft_model, and Trainer's own loop, AdamW
(torch) and mixed precision. The rows are tokenised ahead, all of one length, so
the default collator batches them without padding.

benchmarks/gpu_check.py calls train(); nothing here reads the command line.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path


def train(model_dir: Path, rows: Sequence[Sequence[int]], output_dir: Path, *, batch_size: int,
          steps: int, rank: int, alpha: float, dropout: float, targets: Sequence[str] | str,
          load_in_4bit: bool = True, mixed_precision: str = "bf16",
          gradient_checkpointing: bool = True, learning_rate: float = 1e-4, seed: int = 0,
          on_step: Callable[[int], None] = lambda step: None,
          on_model: Callable[[object], None] = lambda model: None,
          save_dir: Path | None = None) -> None:
    """`steps` optimizer steps on the causal LM in `model_dir`; `on_step(step)` after
    each (the caller times them), `on_model(model)` once the LoRA is in; the adapter is
    saved to `save_dir` at the end when given, as a user's script would."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import (AutoModelForCausalLM, BitsAndBytesConfig, Trainer, TrainerCallback,
                              TrainingArguments, default_data_collator)

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision, torch.float32)
    kwargs: dict = {"dtype": dtype}
    if load_in_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype)
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    checkpointing = {"use_reentrant": False}
    if load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                                gradient_checkpointing_kwargs=checkpointing)
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
    if gradient_checkpointing:
        model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                                             target_modules=targets, task_type="CAUSAL_LM"))
    on_model(model)

    class StepTimer(TrainerCallback):
        def on_step_end(self, args, state, control, **_):
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # the step's kernels are done, as .item() makes them in the engine
            on_step(state.global_step)

    dataset = [{"input_ids": list(r), "attention_mask": [1] * len(r), "labels": list(r)} for r in rows]
    args = TrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=batch_size, max_steps=steps,
        learning_rate=learning_rate, lr_scheduler_type="constant", optim="adamw_torch",
        weight_decay=0.01, max_grad_norm=1.0, bf16=mixed_precision == "bf16",
        fp16=mixed_precision == "fp16", logging_strategy="no", save_strategy="no",
        report_to=[], disable_tqdm=True, remove_unused_columns=False, dataloader_num_workers=0,
        seed=seed, use_cpu=not torch.cuda.is_available())
    trainer = Trainer(model=model, args=args, train_dataset=dataset,
                      data_collator=default_data_collator, callbacks=[StepTimer()])
    trainer.train()
    if save_dir is not None:
        trainer.save_model(str(save_dir))
