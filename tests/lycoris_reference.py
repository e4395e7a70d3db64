"""A reference loader for kohya / LyCORIS LoRA files, written from ComfyUI's weight
adapters (comfy/weight_adapter/lora.py, loha.py, lokr.py) and independent of the exporter:
it patches a diffusers UNet's weights the way ComfyUI patches its model's.

- lora_down / lora_up: W += alpha / rank * (up @ down), conv kernels flattened and the
  product reshaped to W; rank = lora_down's first dimension.
- LoHa: W += alpha / rank * (w1_a @ w1_b) * (w2_a @ w2_b), reshaped; rank = w1_b's first.
- LoKr: W += scale * kron(w1, w2), w1 = lokr_w1 or w1_a @ w1_b, w2 = lokr_w2 or
  w2_a @ w2_b; a 4-D w2 gets w1 unsqueezed to 1x1 kernels; scale = alpha / rank of the
  last decomposed factor, or 1 when both factors are full matrices."""
import torch


def kohya_module_names(unet, prefix: str = "lora_unet") -> dict[str, str]:
    """kohya's name -> the diffusers module path, for every module of the UNet."""
    return {f"{prefix}_{name.replace('.', '_')}": name for name, _ in unet.named_modules() if name}


def _delta(parts: dict[str, torch.Tensor], shape: torch.Size) -> torch.Tensor:
    alpha = parts.get("alpha")
    if "lora_down.weight" in parts:
        down, up = parts["lora_down.weight"].float(), parts["lora_up.weight"].float()
        rank = down.shape[0]
        diff = (up.flatten(1) @ down.flatten(1)).reshape(shape)
    elif "hada_w1_a" in parts:
        m1 = parts["hada_w1_a"].float() @ parts["hada_w1_b"].float()
        m2 = parts["hada_w2_a"].float() @ parts["hada_w2_b"].float()
        rank = parts["hada_w1_b"].shape[0]
        diff = (m1 * m2).reshape(shape)
    else:
        rank = None
        w1 = parts.get("lokr_w1")
        if w1 is None:
            rank = parts["lokr_w1_b"].shape[0]
            w1 = parts["lokr_w1_a"] @ parts["lokr_w1_b"]
        w2 = parts.get("lokr_w2")
        if w2 is None:
            rank = parts["lokr_w2_b"].shape[0]
            w2 = parts["lokr_w2_a"].float() @ parts["lokr_w2_b"].float()
        w1, w2 = w1.float(), w2.float()
        if w2.dim() == 4:
            w1 = w1.unsqueeze(2).unsqueeze(2)
        diff = torch.kron(w1, w2).reshape(shape)
    scale = float(alpha) / rank if alpha is not None and rank is not None else 1.0
    return diff * scale


def apply_kohya(unet, tensors: dict[str, torch.Tensor]) -> set[str]:
    """Add the file's UNet deltas to ``unet``'s weights; the diffusers modules patched."""
    names = kohya_module_names(unet)
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        module, _, suffix = key.partition(".")
        if module.startswith("lora_unet_"):
            grouped.setdefault(module, {})[suffix] = value
    modules = dict(unet.named_modules())
    patched = set()
    with torch.no_grad():
        for kohya, parts in grouped.items():
            target = modules[names[kohya]]  # KeyError: a name ComfyUI would not map
            target.weight += _delta(parts, target.weight.shape).to(target.weight.dtype)
            patched.add(names[kohya])
    return patched
