"""What a fine-tune changed: the held-out records whose answers moved most between
the base model and the base with the run's adapter, by ROUGE-L against the record's own
answer, listed side by side (``lora-studio compare RUN``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...config.jobfile import JobFileError, read_job_toml
from ...runs.exports import TEXT_ADAPTER
from ...runs.layout import RunDir
from ..core.control import EngineError
from .eval_generation import HeldOutPrompt, generate_answers, held_out_prompts
from .metrics import rouge_l


@dataclass(frozen=True)
class Compared:
    prompt: str
    reference: str
    base: str
    adapter: str
    base_rouge: float
    adapter_rouge: float

    @property
    def gap(self) -> float:
        """ROUGE-L the adapter gained (negative: lost) on this record."""
        return self.adapter_rouge - self.base_rouge


def compare_answers(model, tokenizer, prompts: list[HeldOutPrompt], device) -> list[Compared]:
    """Greedy answers of ``model`` (a PeftModel) with its adapter and without it."""
    tuned = generate_answers(model, tokenizer, prompts, device)
    with model.disable_adapter():
        base = generate_answers(model, tokenizer, prompts, device)
    return [Compared(tokenizer.decode(p.prompt_ids, skip_special_tokens=True).strip(),
                     p.reference, b, t, rouge_l(b, p.reference), rouge_l(t, p.reference))
            for p, b, t in zip(prompts, base, tuned)]


def largest_gaps(compared: list[Compared], top: int) -> list[Compared]:
    """The ``top`` records whose ROUGE-L changed most, either way, largest first."""
    return sorted(compared, key=lambda c: -abs(c.gap))[:top]


def compare_run(run_root: str | Path, records: int = 16, top: int = 5) -> list[Compared]:
    """Up to ``records`` held-out records of a finished text run answered by its base
    model and by the base with its final adapter; the ``top`` that changed most."""
    from peft import PeftModel

    from .data import held_out, load_dataset
    from .model import load_base_model, load_tokenizer, resolve_model
    run = RunDir(Path(run_root))
    try:
        job, _ = read_job_toml(run.job_toml)
    except JobFileError as exc:
        raise EngineError("config", str(exc), "Pass a text run's folder.") from None
    if not (run.final / TEXT_ADAPTER).exists():
        raise EngineError("config", f"{run.root} has no trained text adapter in final/.",
                          "Pass a finished text run's folder.")
    if not (job.dataset.eval_split or job.dataset.eval_path.strip()):
        raise EngineError("config", f"{run.root.name} held out no records to compare on.",
                          "Train with dataset.eval_split (or dataset.eval_path) set.")
    info = resolve_model(job)
    tokenizer = load_tokenizer(info.path)
    _, eval_data = held_out(job, load_dataset(job, tokenizer, lambda ev: None), tokenizer,
                            lambda ev: None)
    prompts = held_out_prompts(eval_data, tokenizer, records)
    if not prompts:
        raise EngineError("data", "No held-out record has a prompt and an answer to compare.",
                          "Hold out prompt/response or chat records.")
    model = PeftModel.from_pretrained(load_base_model(job, info.path, quantize=False),
                                      str(run.final))
    return largest_gaps(compare_answers(model, tokenizer, prompts, model.device), top)


def side_by_side(compared: list[Compared]) -> str:
    """Plain text: each record's prompt and reference, then the two answers."""
    blocks = []
    for i, c in enumerate(compared, 1):
        blocks.append(f"#{i}  ROUGE-L base {c.base_rouge:.3f} -> adapter {c.adapter_rouge:.3f} "
                      f"({c.gap:+.3f})\n  prompt:    {c.prompt}\n  reference: {c.reference}\n"
                      f"  base:      {c.base}\n  adapter:   {c.adapter}")
    return "\n\n".join(blocks)
