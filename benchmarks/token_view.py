"""The token view's scan, measured: the time to histogram 100,000 chat records (every
record's length, truncated and dropped as training encodes it, sent as the child
sends it, and the histogram drawn from it) against the time to tokenise the same
records with the fast tokenizer directly. Target: <= 1.2x.

    python benchmarks/token_view.py [--records 100000] [--rounds 3]

The tokenizer is a byte-level BPE of 16,000 tokens trained here on made-up words
with a Zipf-like spread (no download), with a ChatML template. The records are
chats (a system prompt, one or two exchanges) whose lengths spread like chat data,
with max_seq_length 512. The baseline is what tokenising them at all takes: each
conversation rendered once with the chat template and the texts tokenised in batch
calls of the same tokenizer; the tokenising alone is printed as well. Both start from
records in memory. Each round runs both, the first of the pair alternating.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lora_studio.data.text_records import TextRecord, Turn  # noqa: E402
from lora_studio.data.token_lengths import TokenLengths  # noqa: E402
from lora_studio.engine.text.model import load_tokenizer  # noqa: E402
from lora_studio.engine.text.token_view import BATCH, Settings, scan  # noqa: E402

from benchmarks._stats import summarize, verdict  # noqa: E402

SYLLABLES = ["ka", "to", "ri", "sa", "ne", "mo", "lu", "pe", "an", "or", "el", "is", "ath",
             "ing", "ber", "con", "str", "ple", "qu", "ght"]
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + "
          "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\n' }}{% endif %}")
MAX_SEQ_LENGTH = 512


def sentence_maker(seed: int):
    rng = random.Random(seed)
    lexicon = ["".join(rng.choice(SYLLABLES) for _ in range(rng.choice([1, 1, 2, 2, 2, 3, 3, 4])))
               for _ in range(20_000)]
    weights = [1.0 / (i + 1) for i in range(len(lexicon))]

    def words(mean: float) -> str:
        n = max(1, int(rng.lognormvariate(mean, 0.9)))
        return " ".join(rng.choices(lexicon, weights, k=n)).capitalize() + "."
    return words


def make_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    words = sentence_maker(0)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator((words(3.5) for _ in range(20_000)), trainers.BpeTrainer(
        vocab_size=16_000, special_tokens=["<s>", "<|im_end|>", "<|im_start|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "<|im_end|>",
        "pad_token": "<pad>", "chat_template": CHATML, "model_max_length": 1 << 20}))


def make_records(n: int) -> list[TextRecord]:
    words = sentence_maker(1)
    records = []
    for i in range(n):
        turns = [Turn("system", "You are a helpful assistant."), Turn("user", words(3.0)),
                 Turn("assistant", words(4.0))]
        if i % 5 == 0:
            turns += [Turn("user", words(2.5)), Turn("assistant", words(3.5))]
        records.append(TextRecord(tuple(turns), Path("bench.jsonl"), i + 1, "messages"))
    return records


def histogram_time(records, tokenizer, settings: Settings) -> tuple[float, TokenLengths]:
    start = time.perf_counter()
    found = TokenLengths(settings.max_length, total=len(records))
    for msg in scan(records, tokenizer, settings, BATCH):
        found.add(json.loads(json.dumps(msg)))  # what crosses the pipe to the window
    found.histogram()
    return time.perf_counter() - start, found


def direct_time(records, tokenizer) -> tuple[float, float]:
    """(render once + tokenise, tokenise alone) in seconds."""
    start = time.perf_counter()
    texts = [tokenizer.apply_chat_template([{"role": t.role, "content": t.content}
                                            for t in r.turns], tokenize=False) for r in records]
    rendered = time.perf_counter()
    for i in range(0, len(texts), BATCH):
        tokenizer(texts[i:i + BATCH], add_special_tokens=False)
    end = time.perf_counter()
    return end - start, end - rendered


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        make_tokenizer(Path(tmp) / "tokenizer")
        tokenizer = load_tokenizer(Path(tmp) / "tokenizer")
    records = make_records(args.records)
    settings = Settings(use_template=True, responses_only=True, max_length=MAX_SEQ_LENGTH)
    values, baselines, tokenise_only = [], [], []
    for i in range(args.rounds):
        if i % 2:
            (value, found), (base, alone) = histogram_time(records, tokenizer, settings), \
                direct_time(records, tokenizer)
        else:
            (base, alone), (value, found) = direct_time(records, tokenizer), \
                histogram_time(records, tokenizer, settings)
        values.append(value)
        baselines.append(base)
        tokenise_only.append(alone)
        print(f"round {i + 1}: histogram {value:.2f} s, render + tokenise {base:.2f} s, "
              f"tokenise alone {alone:.2f} s; {found.summary()}", flush=True)
    summary = summarize(f"histogram of {args.records:,} records", values, baselines,
                        baseline="rendering once and tokenising directly", unit="s")
    summarize("  the same against tokenising alone (texts rendered beforehand)", values,
              tokenise_only, baseline="tokenising alone", unit="s", per_round=False)
    return 0 if verdict("histogram / direct tokenising", summary.ratio, 1.2) else 1


if __name__ == "__main__":
    sys.exit(main())
