"""The check an ONNX export writes beside its model (engine/text/onnx_export.py): what
onnxruntime computed against the merged PyTorch model, read back as one line for the
CLI and the Export dialog. Plain JSON, no onnxruntime here."""
from __future__ import annotations

import json
from pathlib import Path

ONNX_CHECK = "onnx_check.json"


def check_line(path: str | Path) -> str:
    """'onnxruntime matches the merged model: ...' from an onnx_check.json; '' when it
    cannot be read."""
    try:
        check = json.loads(Path(path).read_text(encoding="utf-8"))
        steps = (" (a prefill and one decoding step from its KV cache)"
                 if check.get("kv_cache") else "")
        return (f"onnxruntime {check['onnxruntime']} matches the merged PyTorch model on "
                f"{check['prompts']} prompts{steps} ({check['dtype']}): largest logit difference "
                f"{check['max_abs_diff']:.3g}, {check['relative_diff']:.3g} of the largest logit "
                f"(tolerance {check['tolerance']:g}); the same next token "
                f"{check['same_next_token']:.0%} of the time.")
    except (OSError, ValueError, KeyError, TypeError):
        return ""
