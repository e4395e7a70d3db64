"""Which layers an image network (LoRA, LoCon, LoHa, LoKr) trains and with what rank and
alpha, shared by the engine, the export and the memory estimate.

LoCon, LoHa and LoKr also adapt the UNet's ResNet and up/down-sampler convs, as kohya's
LoCon and LyCORIS do: the 3x3 ones with the conv rank / alpha, the 1x1 shortcut with the
network's own rank / alpha (kohya gives 1x1 convs the linear layers' dim)."""
from __future__ import annotations

from .schema import NetworkConfig

CONV_3X3_TARGETS = ("conv1", "conv2", "conv")  # resnets' convs, down/upsamplers' conv
CONV_1X1_TARGETS = ("conv_shortcut",)
CONV_ALGOS = ("locon", "loha", "lokr")
# Algos diffusers cannot load, and why (the export, `check` and the Export dialog say it).
NO_DIFFUSERS = {algo: f"diffusers' Stable Diffusion pipelines (0.42) load LoRA and LoCon files "
                      f"but not {name}" for algo, name in {"loha": "LoHa", "lokr": "LoKr"}.items()}
# kohya's ss_network_module and network_args "algo" per algo, as kohya / LyCORIS write them.
KOHYA_MODULE = {"lora": "networks.lora", "locon": "networks.lora",
                "loha": "lycoris.kohya", "lokr": "lycoris.kohya"}


def trains_convs(net: NetworkConfig) -> bool:
    return net.algo in CONV_ALGOS


def conv_rank(net: NetworkConfig) -> int:
    return net.conv_rank or net.rank


def conv_alpha(net: NetworkConfig) -> float:
    return net.conv_alpha or net.alpha


def unet_conv_targets(net: NetworkConfig) -> tuple[str, ...]:
    return CONV_3X3_TARGETS + CONV_1X1_TARGETS if trains_convs(net) else ()


def is_conv_3x3(module: str) -> bool:
    """Whether a module path ('unet.down_blocks.0.resnets.0.conv1') is one of the 3x3 convs."""
    return module.rpartition(".")[2] in CONV_3X3_TARGETS


def rank_alpha(net: NetworkConfig, module: str) -> tuple[int, float]:
    """The (rank, alpha) a module trains with."""
    if trains_convs(net) and is_conv_3x3(module):
        return conv_rank(net), conv_alpha(net)
    return net.rank, net.alpha


def kohya_network_args(net: NetworkConfig) -> dict[str, str]:
    """The ss_network_args kohya / LyCORIS record for this network."""
    if not trains_convs(net):
        return {}
    args = {"conv_dim": str(conv_rank(net)), "conv_alpha": f"{conv_alpha(net):g}"}
    if net.algo in ("loha", "lokr"):
        args["algo"] = net.algo
    if net.algo == "lokr":
        args["factor"] = str(net.lokr_factor)
    return args
