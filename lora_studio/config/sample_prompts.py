"""A sample prompt line with kohya's per-prompt options, as sd-scripts reads them:

    a red circle, white background --n blurry, text --w 768 --h 512 --s 28 --l 7 --d 42 --ss ddim

``--n`` negative prompt, ``--w`` / ``--h`` size, ``--s`` steps, ``--l`` CFG scale,
``--d`` seed, ``--ss`` sampler. The line is cut at every " --"; what comes before the
first cut is the prompt. An option that cannot be read is named in ``problems`` and
left out (the job's setting is used), never dropped silently.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .samplers import SAMPLERS, sampler_name

MAX_SIDE = 4096
MAX_STEPS = 1000     # kohya's own cap
MAX_SEED = 2**32 - 1


@dataclass
class SamplePrompt:
    prompt: str
    negative: str | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    cfg: float | None = None
    seed: int | None = None
    sampler: str | None = None          # a SAMPLERS name
    problems: list[str] = field(default_factory=list)


def _side(text: str) -> tuple[int | None, str | None]:
    side = int(text)
    if not 64 <= side <= MAX_SIDE:
        return None, f"a side of {side} is outside 64-{MAX_SIDE}"
    if side % 8:
        # as kohya: the pipeline needs a multiple of 8
        return side - side % 8, f"{side} is not a multiple of 8; {side - side % 8} is used"
    return side, None


def _whole(text: str, low: int, high: int, what: str) -> tuple[int | None, str | None]:
    value = int(text)
    if not low <= value <= high:
        return None, f"{what} {value} is outside {low}-{high}"
    return value, None


def _cfg(text: str) -> tuple[float | None, str | None]:
    value = float(text)
    if not 0 <= value <= 100:
        return None, f"a CFG scale of {value:g} is outside 0-100"
    return value, None


def _sampler(text: str) -> tuple[str | None, str | None]:
    name = sampler_name(text)
    if name is None:
        return None, f"sampler '{text}' is not one of {', '.join(SAMPLERS)}"
    return name, None


# option letter -> (SamplePrompt field, what its value looks like, reader)
OPTIONS = {
    "w": ("width", r"\d+", _side),
    "h": ("height", r"\d+", _side),
    "s": ("steps", r"\d+", lambda t: _whole(t, 1, MAX_STEPS, "steps")),
    "l": ("cfg", r"\d+(?:\.\d*)?|\.\d+", _cfg),
    "d": ("seed", r"\d+", lambda t: _whole(t, 0, MAX_SEED, "seed")),
    "n": ("negative", r".*", lambda t: (t, None)),
    "ss": ("sampler", r".+", _sampler),
}


def parse_sample_prompt(line: str) -> SamplePrompt:
    parts = line.strip().split(" --")
    sample = SamplePrompt(parts[0].strip())
    for part in parts[1:]:
        option, _, value = part.strip().partition(" ")
        value = value.strip()
        known = OPTIONS.get(option.lower())
        if known is None:
            sample.problems.append(f"--{part.strip()}: unknown option (known: "
                                   f"{', '.join('--' + o for o in OPTIONS)})")
            continue
        name, pattern, read = known
        if not re.fullmatch(pattern, value):
            sample.problems.append(f"--{option} {value}: not a valid value" if value else
                                   f"--{option} has no value")
            continue
        result, problem = read(value)
        if problem:
            sample.problems.append(f"--{option} {value}: {problem}")
        if result is not None:
            setattr(sample, name, result)
    return sample

