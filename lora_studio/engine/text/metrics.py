"""Scores of generated answers against the reference answers of held-out records:
corpus BLEU (sacrebleu, 0-100, its standard 13a tokenisation and exp smoothing),
ROUGE-L F-measure (rouge-score, 0-1, the mean over records) and exact match (0-1, the
share of answers equal to the reference once surrounding and repeated whitespace is
ignored). Both libraries are the ``metrics`` extra."""
from __future__ import annotations

import re

from ..core.control import EngineError

# Higher is better for every generation metric; the eval loss is the one lower is better.
GENERATION_METRICS = ("bleu", "rougeL", "exact_match")


class _WordTokenizer:
    """rouge-score's own tokenizer keeps only the ASCII letters and digits, so an answer
    in Greek or Japanese would score 0; this one keeps every letter and digit (for ASCII
    text it splits exactly as the default does without stemming)."""

    def tokenize(self, text: str) -> list[str]:
        return re.findall(r"[^\W_]+", text.lower())


def _libraries():
    try:
        import sacrebleu
        from rouge_score import rouge_scorer
    except ImportError as exc:
        raise EngineError("config", f"Generation metrics need {exc.name}, which is not installed.",
                          'pip install "lora-studio[metrics]", or set '
                          "output.eval_generate_records to 0.") from None
    return sacrebleu, rouge_scorer


def check_installed() -> None:
    """Raises the config error before training starts, not at the first evaluation."""
    _libraries()


def _normal(text: str) -> str:
    return " ".join(text.split())


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure of one answer."""
    _, rouge_scorer = _libraries()
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_WordTokenizer())
    return scorer.score(reference, prediction)["rougeL"].fmeasure


def score(predictions: list[str], references: list[str]) -> dict[str, float]:
    """{"bleu", "rougeL", "exact_match"} of the predictions, one reference each."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError("one prediction per reference, and at least one")
    sacrebleu, rouge_scorer = _libraries()
    bleu = sacrebleu.corpus_bleu(predictions, [references]).score
    rouge = [rouge_l(pred, ref) for pred, ref in zip(predictions, references)]
    exact = [_normal(p) == _normal(r) for p, r in zip(predictions, references)]
    return {"bleu": float(bleu), "rougeL": sum(rouge) / len(rouge),
            "exact_match": sum(exact) / len(exact)}
