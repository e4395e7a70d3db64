"""Text samples during training: greedy answers to the job's sample prompts."""
from __future__ import annotations

import torch

from .tokens import prompt_ids


def generate_samples(model, tokenizer, prompts: list[str], *, use_template: bool,
                     max_new_tokens: int, device) -> list[dict]:
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([prompt_ids(tokenizer, prompt, use_template)], device=device)
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
            text = tokenizer.decode(gen[0, ids.shape[1]:], skip_special_tokens=True)
            out.append({"prompt": prompt, "text": text.strip()})
    model.train(was_training)
    return out
