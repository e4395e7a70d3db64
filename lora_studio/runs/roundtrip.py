"""The round-trip check a text export writes beside itself (engine/text/verify.py): the
export loaded back by its own runtime (transformers for a merged model, llama.cpp for a
GGUF) against PEFT's base + adapter on fixed prompts, read back as lines for the CLI and
the Export dialog. Plain JSON, no ML library here."""
from __future__ import annotations

import json
from pathlib import Path

VERIFY = "verify.json"
LLAMACPP_MISSING = ('not checked: install the `llamacpp` extra (pip install '
                    '"lora-studio[llamacpp]") to load it back in llama.cpp')


def verify_lines(path: str | Path) -> list[str]:
    """What a verify.json says: a summary line, then each prompt's greedy answers; []
    when it cannot be read."""
    try:
        check = json.loads(Path(path).read_text(encoding="utf-8"))
        if not check["checked"]:
            return [f"Round trip {check['reason']}."]
        lines = [_summary(check)]
        for p in check["prompts"]:
            lines.append(f"  {p['prompt']!r}: PEFT {p['peft']!r}, export {p['export']!r}")
        return lines
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _summary(check: dict) -> str:
    same = sum(p["same_tokens"] == p["tokens"] for p in check["prompts"])
    verdict = "passed" if check["passed"] else "found differences"
    text = (f"Round trip {verdict}: {check['runtime']} loads the {check['export']} back; greedy "
            f"answers the same as PEFT (base + adapter) on {same}/{len(check['prompts'])} "
            f"prompts")
    if "relative_diff" in check:
        text += (f"; largest logit difference {check['max_abs_diff']:.3g}, "
                 f"{check['relative_diff']:.3g} of the largest logit (tolerance "
                 f"{check['tolerance']:g})")
    if "base_diff" in check:
        text += f"; it differs from the base model by up to {check['base_diff']:.3g}"
    if "first_token_base_diff" in check:
        text += (f"; next-token logits {check['first_token_max_abs_diff']:.3g} from PEFT's, "
                 f"{check['first_token_base_diff']:.3g} from the base model's")
        if not check["adapter_applied"]:
            text += " (the adapter is not in effect)"
    return text + "."
