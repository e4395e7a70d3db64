"""The LoRA (LoCon, LoHa, LoKr) layers of an image job: in the UNet and, when asked, the
text encoder(s), with PEFT names per pipeline component ("unet.", "text_encoder.", "text_encoder_2.")."""
from __future__ import annotations

import torch

from ...config.model_info import IMAGE_DEFAULT_TARGETS, TEXT_ENCODER_DEFAULT_TARGETS
from ...config.network import CONV_3X3_TARGETS, conv_alpha, conv_rank, unet_conv_targets
from ...config.schema import JobConfig, NetworkConfig
from .model import SDModel

# Components that get a LoRA, as named in the pipeline and in diffusers' LoRA files.
UNET = "unet"
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")


def peft_config(net: NetworkConfig, targets, convs: tuple[str, ...] = ()):
    """PEFT's config for network.algo: LoraConfig for lora / locon, LoHaConfig / LoKrConfig
    for loha / lokr, with the conv rank / alpha on the 3x3 convs."""
    from peft import LoHaConfig, LoKrConfig, LoraConfig

    conv_3x3 = [t for t in convs if t in CONV_3X3_TARGETS]
    ranks = {t: conv_rank(net) for t in conv_3x3}
    alphas = {t: conv_alpha(net) for t in conv_3x3}
    common = dict(r=net.rank, target_modules=[*targets, *convs], rank_pattern=ranks)
    if net.algo == "loha":
        return LoHaConfig(alpha=net.alpha, alpha_pattern=alphas, **common)
    if net.algo == "lokr":
        return LoKrConfig(alpha=net.alpha, alpha_pattern=alphas, decompose_factor=net.lokr_factor,
                          **common)
    return LoraConfig(lora_alpha=net.alpha, alpha_pattern=alphas, lora_dropout=net.dropout,
                      init_lora_weights="gaussian", **common)


def add_lora(model: SDModel, job: JobConfig) -> dict[str, torch.nn.Module]:
    """Put LoRA (or LoCon / LoHa / LoKr) layers in the UNet (and the text encoders when
    asked); everything else stays frozen. Returns the adapted components by pipeline name."""
    from peft import inject_adapter_in_model

    pipe = model.pipe
    for module in (pipe.unet, pipe.vae, *model.text_encoders):
        module.requires_grad_(False)
    net = job.network

    pipe.unet.add_adapter(peft_config(net, net.target_modules or IMAGE_DEFAULT_TARGETS,
                                      unet_conv_targets(net)))
    adapted = {UNET: pipe.unet}
    if net.train_text_encoder:
        for name, encoder in zip(TEXT_ENCODERS, model.text_encoders):
            # peft directly: transformers' own add_adapter wants a newer peft than the UNet's.
            inject_adapter_in_model(peft_config(net, TEXT_ENCODER_DEFAULT_TARGETS), encoder)
            adapted[name] = encoder
    for module in adapted.values():
        for p in module.parameters():
            if p.requires_grad:
                p.data = p.data.float()  # LoRA weights train in fp32 whatever the base dtype
    return adapted


def lora_state(adapted: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """The trained tensors with PEFT names, prefixed by component ('unet.' ...)."""
    from peft import get_peft_model_state_dict

    return {f"{name}.{key}": value.detach().float().cpu()
            for name, module in adapted.items()
            for key, value in get_peft_model_state_dict(module).items()}


def load_lora_state(adapted: dict[str, torch.nn.Module], tensors: dict[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict

    for name, module in adapted.items():
        prefix = name + "."
        own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        result = set_peft_model_state_dict(module, own)
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"checkpoint tensors do not fit the {name} LoRA: "
                             f"{result.unexpected_keys[:3]}")
