"""Samplers of image generation (the playground's and the training samples'), as plain
data: A1111's names -> diffusers scheduler class and options, and the names kohya's
sd-scripts uses (``sample_sampler``, a sample prompt's ``--ss``)."""
from __future__ import annotations

SAMPLERS: dict[str, tuple[str, dict]] = {
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "DDIM": ("DDIMScheduler", {}),
}

# kohya's names (its 'k_' spellings too) of the samplers above. kohya's dpmsolver++ is
# diffusers' DPMSolverMultistepScheduler with its default algorithm: DPM++ 2M.
KOHYA_SAMPLERS: dict[str, str] = {
    "euler_a": "Euler a", "k_euler_a": "Euler a", "euler": "Euler", "k_euler": "Euler",
    "dpmsolver++": "DPM++ 2M", "dpm++2m": "DPM++ 2M", "dpm++_2m": "DPM++ 2M",
    "dpm++2m_karras": "DPM++ 2M Karras", "dpm++_2m_karras": "DPM++ 2M Karras", "ddim": "DDIM",
}


def sampler_name(name: str) -> str | None:
    """The SAMPLERS name for an A1111 or kohya sampler name (any case); None when there
    is no such sampler here."""
    wanted = name.strip().lower()
    for known in SAMPLERS:
        if known.lower() == wanted:
            return known
    return KOHYA_SAMPLERS.get(wanted.replace(" ", "_"))
