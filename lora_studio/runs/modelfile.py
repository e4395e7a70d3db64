"""An Ollama ``Modelfile`` beside a GGUF export, and the ``ollama create`` command that
builds the model from it. The chat template becomes Ollama's Go ``TEMPLATE`` by rendering
the model's own template around placeholders (``template_from_renders``), so the model
answers in the format it was trained on and stops at its end token. Plain text work
(no torch); the engine does the rendering with the tokenizer."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MODELFILE = "Modelfile"
# Placeholders rendered through the chat template, then replaced by Ollama's variables.
SYSTEM_MARK, PROMPT_MARK, RESPONSE_MARK = "LSSYSTEMMARK", "LSPROMPTMARK", "LSRESPONSEMARK"


@dataclass(frozen=True)
class Renders:
    """The chat template rendered around the marks; None where it refuses that shape."""
    with_system: str | None    # [system, user], with the generation prompt
    without_system: str        # [user], with the generation prompt
    answered: str              # [user, assistant], without the generation prompt


def template_from_renders(renders: Renders, bos_token: str | None) -> tuple[str, list[str]]:
    """Ollama's Go template for one turn (.System, .Prompt, .Response) and the text that
    ends an answer (the stop strings) from the renders."""
    bare = renders.without_system
    prompt_at = bare.index(PROMPT_MARK)
    head, generation = bare[:prompt_at], bare[prompt_at + len(PROMPT_MARK):]
    with_system = renders.with_system
    if bos_token and head.startswith(bos_token):
        head = head[len(bos_token):]   # llama.cpp and Ollama add the BOS token themselves
    if with_system and SYSTEM_MARK in with_system and PROMPT_MARK in with_system:
        system_head = with_system[:with_system.index(PROMPT_MARK)]
        if bos_token and system_head.startswith(bos_token):
            system_head = system_head[len(bos_token):]
        # head = start + plain + end, system_head = start + system + end
        end = _common_prefix(system_head[::-1], head[::-1])[::-1]
        start = _common_prefix(system_head[:len(system_head) - len(end)],
                               head[:len(head) - len(end)])
        system = system_head[len(start):len(system_head) - len(end)]
        plain = head[len(start):len(head) - len(end)]
        head = (start + "{{ if .System }}" + system.replace(SYSTEM_MARK, "{{ .System }}")
                + ("{{ else }}" + plain if plain else "") + "{{ end }}" + end)
    after = renders.answered[renders.answered.index(RESPONSE_MARK) + len(RESPONSE_MARK):]
    stops = [after.strip()] if after.strip() else []
    return head + "{{ .Prompt }}" + generation + "{{ .Response }}" + after, stops


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def _quoted(text: str) -> str:
    return '"""' + text + '"""'


def modelfile_text(source: str, adapter: str | None, template: str | None, stops: list[str],
                   system: str | None) -> str:
    """The Modelfile: FROM ``source`` (a GGUF beside it, or the base model's folder),
    ADAPTER ``adapter`` when set, the stop strings, the template and the system prompt."""
    lines = [f"FROM {_path_arg(source)}"]
    if adapter:
        lines.append(f"ADAPTER {_path_arg(adapter)}")
    lines += [f"PARAMETER stop {_param(stop)}" for stop in dict.fromkeys(stops)]
    if template:
        lines.append(f"TEMPLATE {_quoted(template)}")
    if system:
        lines.append(f"SYSTEM {_quoted(system)}")
    return "\n".join(lines) + "\n"


def _path_arg(path: str) -> str:
    return f'"{path}"' if re.search(r'\s', path) else path


def _param(value: str) -> str:
    return f'"{value}"' if re.search(r'[\s"]', value) else value


def ollama_name(output_name: str) -> str:
    """A model name ``ollama create`` accepts (lower case letters, digits, . _ -)."""
    name = re.sub(r"[^a-z0-9._-]+", "-", output_name.lower()).strip("-._")
    return name or "lora"


def ollama_command(output_name: str, modelfile: Path) -> str:
    path = str(modelfile)
    return f"ollama create {ollama_name(output_name)} -f " + (f'"{path}"' if " " in path else path)
