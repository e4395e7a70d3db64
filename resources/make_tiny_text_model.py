"""Build the tiny Llama-style causal LM shipped in resources/tiny-text-model/.

Random weights, real architecture (LlamaForCausalLM: hidden 64, 2 layers, grouped-query
attention) and a byte-level BPE tokenizer trained here on the demo chat data, with a
chat template, so nothing is downloaded. It is for tests and `lora-studio demo text`:
it knows nothing until a LoRA teaches it the demo data.

    python resources/make_tiny_text_model.py    # writes resources/tiny-text-model/
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEMO_DATA = HERE / "demo-text" / "chat.jsonl"
SPECIAL = ["<s>", "<|end|>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]
# Each turn is "<|role|>\n{content}<|end|>\n"; the assistant's generation prompt is
# "<|assistant|>\n", so a rendered prefix is always a prefix of the longer rendering.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def _demo_texts() -> list[str]:
    texts = []
    for line in DEMO_DATA.read_text(encoding="utf-8").splitlines():
        for turn in json.loads(line)["messages"]:
            texts.append(turn["content"])
    return texts


def build_tokenizer(texts: list[str], vocab_size: int = 384):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<|end|>",
                                   pad_token="<pad>", chat_template=CHAT_TEMPLATE,
                                   model_max_length=512)


def build_model(tokenizer, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config).eval()
    # The (tied, frozen) embedding bounds the logits after the final RMSNorm; at the
    # usual 0.02 init a LoRA cannot make any token likely, so widen it.
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(10.0)
    return model


def main(out: Path = HERE / "tiny-text-model") -> Path:
    tokenizer = build_tokenizer(_demo_texts())
    model = build_model(tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    # Readable by transformers 4.x too: the generic fast class, template inline.
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(tokenizer_class="PreTrainedTokenizerFast", chat_template=CHAT_TEMPLATE)
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    path = main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "tiny-text-model")
    print(f"wrote {path}")
