"""What a fine-tune changed: the held-out records whose answers moved most between
the base model (or another run's adapter on the same base) and the run's adapter, by
ROUGE-L against the record's own answer, listed side by side
(``lora-studio compare RUN [--against OTHER_RUN]``)."""
from __future__ import annotations

from pathlib import Path

from ...config.jobfile import JobFileError, read_job_toml
from ...config.schema import JobConfig
from ...runs.compare_file import Compared, Comparison
from ...runs.exports import TEXT_ADAPTER
from ...runs.layout import RunDir
from ..core.control import EngineError
from .eval_generation import HeldOutPrompt, generate_answers, held_out_prompts
from .metrics import rouge_l

OTHER = "other"   # the adapter name of the run compared against


def compare_answers(model, tokenizer, prompts: list[HeldOutPrompt], device,
                    against: str | None = None) -> list[Compared]:
    """Greedy answers of ``model`` (a PeftModel) with its default adapter, and without
    it or with adapter ``against``."""
    model.set_adapter("default")
    after = generate_answers(model, tokenizer, prompts, device)
    if against is None:
        with model.disable_adapter():
            before = generate_answers(model, tokenizer, prompts, device)
    else:
        model.set_adapter(against)
        before = generate_answers(model, tokenizer, prompts, device)
        model.set_adapter("default")
    return [Compared(tokenizer.decode(p.prompt_ids, skip_special_tokens=True).strip(),
                     p.reference, b, a, rouge_l(b, p.reference), rouge_l(a, p.reference))
            for p, b, a in zip(prompts, before, after)]


def largest_gaps(compared: list[Compared], top: int) -> list[Compared]:
    """The ``top`` records whose ROUGE-L changed most, either way, largest first."""
    return sorted(compared, key=lambda c: -abs(c.gap))[:top]


def _trained_job(run: RunDir) -> JobConfig:
    try:
        job, _ = read_job_toml(run.job_toml)
    except JobFileError as exc:
        raise EngineError("config", str(exc), "Pass a text run's folder.") from None
    if not (run.final / TEXT_ADAPTER).exists():
        raise EngineError("config", f"{run.root} has no trained text adapter in final/.",
                          "Pass a finished text run's folder.")
    return job


def compare_run(run_root: str | Path, records: int = 16, top: int = 5,
                against: str | Path | None = None) -> Comparison:
    """Up to ``records`` held-out records of a finished text run answered by its base
    model (or by the final adapter of run ``against``, trained on the same base) and by
    the base with the run's final adapter; the ``top`` that changed most."""
    from peft import PeftModel

    from .data import held_out, load_dataset
    from .model import load_base_model, load_tokenizer, resolve_model
    run = RunDir(Path(run_root))
    job = _trained_job(run)
    other = RunDir(Path(against)) if against is not None else None
    if other is not None and _trained_job(other).model.path != job.model.path:
        raise EngineError("config", f"{other.root.name} was trained on another base model than "
                                    f"{run.root.name}.",
                          "Compare runs of the same base model.")
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
    if other is not None:
        model.load_adapter(str(other.final), adapter_name=OTHER)
    found = largest_gaps(compare_answers(model, tokenizer, prompts, model.device,
                                         OTHER if other is not None else None), top)
    return Comparison(other.root.name if other is not None else "base", run.root.name,
                      str(other.root) if other is not None else "", len(prompts), tuple(found))


def side_by_side(compared: list[Compared] | tuple[Compared, ...], before: str = "base",
                 after: str = "adapter") -> str:
    """Plain text: each record's prompt and reference, then the two answers."""
    width = max(len(before), len(after), len("reference")) + 2
    blocks = []
    for i, c in enumerate(compared, 1):
        rows = (("prompt", c.prompt), ("reference", c.reference), (before, c.before),
                (after, c.after))
        blocks.append(f"#{i}  ROUGE-L {before} {c.before_rouge:.3f} -> {after} "
                      f"{c.after_rouge:.3f} ({c.gap:+.3f})\n"
                      + "\n".join(f"  {label + ':':<{width}}{text}" for label, text in rows))
    return "\n\n".join(blocks)
