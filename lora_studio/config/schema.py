"""The job schema: one validated `JobConfig` per training run.

Every field carries the metadata the parameter panel needs (title, help, bounds,
group, advanced flag, widget hint), so the UI is generated from this file alone.
Field paths are dotted: ``network.rank``, ``training.batch_size``.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .samplers import SAMPLERS

SCHEMA_VERSION = 2

ModelFamily = Literal["auto", "text", "sd1", "sd2", "sdxl"]
Optimizer = Literal["AdamW", "AdamW8bit", "PagedAdamW8bit", "Lion8bit", "Adafactor", "Prodigy",
                    "DAdaptAdam", "AdamWScheduleFree"]
Scheduler = Literal[
    "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"
]
MixedPrecision = Literal["no", "fp16", "bf16"]
DataFormat = Literal["auto", "images", "prompt_response", "alpaca", "messages", "text"]
LoraInit = Literal["default", "gaussian", "pissa", "olora", "loftq"]
TargetPreset = Literal["default", "attention", "all_linear"]
NetworkAlgo = Literal["lora", "locon", "loha", "lokr"]
LogWith = Literal["none", "tensorboard", "wandb", "both"]
SavePrecision = Literal["fp32", "fp16", "bf16"]
SamplerName = Literal[tuple(SAMPLERS)]  # type: ignore[valid-type]
EvalMetric = Literal["eval_loss", "rougeL", "bleu", "exact_match"]


def field(
    default: Any = ...,
    *,
    title: str,
    help: str,
    group: str,
    advanced: bool = False,
    widget: str | None = None,
    local_path: bool = False,
    applies_to: str = "all",
    unset: str = "",
    **bounds: Any,
) -> Any:
    """A pydantic Field carrying the UI metadata.

    widget: 'dir', 'file', 'path' (file or folder or Hub id), 'lines' (one item a line)
    local_path: the value is a path on this machine; left out of shared presets.
    applies_to: 'all', 'text' or 'image': which job kind uses the field.
    unset: what leaving an optional field empty means (the editor's placeholder).
    """
    extra = {"group": group, "advanced": advanced, "applies_to": applies_to}
    if unset:
        extra["unset"] = unset
    if widget:
        extra["widget"] = widget
    if local_path:
        extra["local_path"] = True
    factory = bounds.pop("default_factory", None)
    if factory is not None:
        return Field(default_factory=factory, title=title, description=help,
                     json_schema_extra=extra, **bounds)
    return Field(default, title=title, description=help, json_schema_extra=extra, **bounds)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    path: str = field(
        "", title="Base model", group="Model", widget="path", local_path=True,
        help="A local model folder, a single-file checkpoint (.safetensors) or a Hugging Face Hub id "
             "such as 'Qwen/Qwen2.5-0.5B'. Hub ids must already be in your local cache.")
    family: ModelFamily = field(
        "auto", title="Model family", group="Model",
        help="'auto' detects it from the model files. Text models are causal language models; "
             "sd1 / sd2 / sdxl are Stable Diffusion generations.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = field(
        "auto", title="Weights dtype", group="Model", advanced=True,
        help="Precision the frozen base weights are loaded in. 'auto' follows mixed precision.")
    load_in_4bit: bool = field(
        False, title="Load base in 4-bit (QLoRA)", group="Model", applies_to="text",
        help="Quantise the frozen base model to 4-bit NF4 with bitsandbytes. Needs an NVIDIA GPU.")
    load_in_8bit: bool = field(
        False, title="Load base in 8-bit", group="Model", advanced=True, applies_to="text",
        help="Quantise the frozen base model to 8-bit with bitsandbytes. Needs an NVIDIA GPU.")
    prediction_type: Literal["auto", "epsilon", "v_prediction"] = field(
        "auto", title="Prediction type", group="Model", advanced=True, applies_to="image",
        help="What the UNet predicts. 'auto' reads it from the model (SD 2.x 768 models use v-prediction).")
    allow_pickle: bool = field(
        False, title="Allow pickle checkpoints", group="Model", advanced=True,
        help="Allow loading .ckpt / .pt / .bin files. Pickle files can run code when loaded: "
             "only enable this for files you trust.")
    clip_skip: int = field(
        1, title="CLIP skip", group="Model", advanced=True, applies_to="image",
        help="Condition on the text encoder's N-th layer from the end (then its final layer norm), "
             "as kohya and A1111 count: 1 is the last layer, 2 the one before (usual for anime "
             "models). Samples use it too. SDXL always uses its penultimate layer and ignores this.",
        ge=1, le=12)


class DatasetConfig(Section):
    path: str = field(
        "", title="Dataset", group="Dataset", widget="path", local_path=True,
        help="Images: a folder of images with caption files (kohya 'N_name' sub-folders give N repeats). "
             "Text: a .jsonl / .json file or a folder of them.")
    format: DataFormat = field(
        "auto", title="Data format", group="Dataset",
        help="'auto' detects it. Text: prompt/response, alpaca (instruction/input/output), "
             "messages (chat turns) or plain text.")
    caption_extension: str = field(
        ".txt", title="Caption extension", group="Dataset", applies_to="image",
        help="Extension of the caption file beside each image.", min_length=1, max_length=16)
    repeats: int = field(
        1, title="Repeats", group="Dataset", applies_to="image",
        help="How often each image is seen per epoch, for folders without an 'N_' prefix.", ge=1, le=1000)
    resolution: int = field(
        512, title="Resolution", group="Dataset", applies_to="image",
        help="Training resolution in pixels (the side of the square area). 512 for SD 1.x, 768 for SD 2.x, "
             "1024 for SDXL.", ge=64, le=4096)
    enable_bucket: bool = field(
        True, title="Aspect-ratio bucketing", group="Dataset", applies_to="image",
        help="Group images by aspect ratio instead of cropping everything square.")
    min_bucket_reso: int = field(
        256, title="Min bucket side", group="Dataset", advanced=True, applies_to="image",
        help="Smallest side a bucket may have.", ge=64, le=4096)
    max_bucket_reso: int = field(
        1024, title="Max bucket side", group="Dataset", advanced=True, applies_to="image",
        help="Largest side a bucket may have.", ge=64, le=8192)
    bucket_reso_steps: int = field(
        64, title="Bucket step", group="Dataset", advanced=True, applies_to="image",
        help="Bucket sides are multiples of this.", ge=8, le=256)
    bucket_no_upscale: bool = field(
        False, title="Never upscale", group="Dataset", advanced=True, applies_to="image",
        help="kohya's bucket_no_upscale: an image smaller than the resolution gets a bucket of "
             "its own size (cut down to the bucket step) instead of being enlarged; min and max "
             "bucket side are then not used.")
    random_crop: bool = field(
        False, title="Random crop", group="Dataset", advanced=True, applies_to="image",
        help="Crop at a random position instead of the centre.")
    flip_aug: bool = field(
        False, title="Horizontal flip", group="Dataset", applies_to="image",
        help="Randomly mirror images. Do not use for asymmetric subjects or text.")
    shuffle_caption: bool = field(
        False, title="Shuffle caption tags", group="Dataset", applies_to="image",
        help="Shuffle the comma-separated tags of each caption every step.")
    keep_tokens: int = field(
        0, title="Keep first N tags", group="Dataset", applies_to="image",
        help="With shuffling, the first N tags stay in place (e.g. your trigger word).", ge=0, le=255)
    caption_dropout_rate: float = field(
        0.0, title="Caption dropout", group="Dataset", advanced=True, applies_to="image",
        help="Fraction of steps trained with an empty caption.", ge=0.0, le=1.0)
    subsets: list[str] = field(
        default_factory=list, title="Concept folders", group="Dataset", advanced=True,
        applies_to="image", widget="lines",
        help="Folders trained with settings of their own, as kohya's dataset config "
             "subsets: one a line, the folder (inside the dataset folder, or a full path) "
             "then settings separated by ';', e.g. '10_sks dog; keep_tokens=1' or 'style; "
             "repeats=2; caption_extension=.caption; shuffle_caption=true; resolution=768'. "
             "Settings: repeats, caption_extension, shuffle_caption, keep_tokens, resolution, "
             "class_tokens (the caption of images without one), is_reg (regularisation "
             "images). When set, only these folders train.")
    reg_path: str = field(
        "", title="Regularisation images", group="Dataset", widget="dir", local_path=True,
        applies_to="image",
        help="DreamBooth prior preservation, as kohya's reg_data_dir: a folder of 'N_class' "
             "folders (e.g. '1_dog') with pictures of the class your subject belongs to. Each "
             "epoch trains as many of them as training samples; one without a caption file is "
             "captioned with its class. Empty trains without them.")
    prior_loss_weight: float = field(
        1.0, title="Prior loss weight", group="Dataset", advanced=True, applies_to="image",
        help="The regularisation images' loss is multiplied by this (kohya's "
             "prior_loss_weight); 0 gives them no say.", ge=0.0, le=100.0)
    cache_latents: bool = field(
        True, title="Cache latents", group="Dataset", applies_to="image",
        help="Encode images with the VAE once and reuse the latents (disables random crop and flip).")
    cache_latents_to_disk: bool = field(
        False, title="Cache latents to disk", group="Dataset", advanced=True, applies_to="image",
        help="Keep the latent cache on disk beside the run instead of in memory.")
    max_seq_length: int = field(
        1024, title="Max sequence length", group="Dataset", applies_to="text",
        help="Records longer than this many tokens are truncated.", ge=16, le=1_048_576)
    chat_template: str = field(
        "auto", title="Chat template", group="Dataset", advanced=True, applies_to="text",
        help="'auto' uses the model's own chat template and a plain 'User:/Assistant:' fallback when it "
             "has none; 'none' always uses the fallback.", min_length=1)
    train_on_responses_only: bool = field(
        True, title="Loss on responses only", group="Dataset", applies_to="text",
        help="Compute the loss only on the assistant's answers, not on the prompts.")
    columns: list[str] = field(
        default_factory=list, title="Column map", group="Dataset", advanced=True,
        applies_to="text", widget="lines",
        help="When your data's field names differ from the known shapes: one role=column a "
             "line, e.g. prompt=question and response=answer (roles: prompt, response, system, "
             "instruction, input, output, messages, conversations, text).")
    mix: list[str] = field(
        default_factory=list, title="Mix in datasets", group="Dataset", advanced=True,
        applies_to="text", widget="lines",
        help="More datasets trained with this one, one 'PATH_OR_ID @ WEIGHT' a line: a local "
             "file or folder or a dataset id in your Hugging Face cache; the weight is how "
             "many times its records are taken (0.5 = a half, 2 = twice).")
    eval_split: float = field(
        0.0, title="Held-out share", group="Dataset",
        help="Share of the records or images kept out of training to measure the eval loss "
             "on (a seeded choice, the same every run); 0 trains on all of them. Images are "
             "scored at fixed timesteps and noise, so the curve moves only when the weights "
             "do.", ge=0.0, le=0.5)
    eval_path: str = field(
        "", title="Eval dataset", group="Dataset", advanced=True, widget="path",
        local_path=True,
        help="A separate file or folder of records (text), or a folder of images with "
             "captions (images), to measure the eval loss on instead of a held-out share.")
    streaming: bool = field(
        False, title="Stream from disk", group="Dataset", advanced=True, applies_to="text",
        help="For datasets larger than memory: records are read and tokenised one at a time "
             "into a token file in the cache, and training reads batches from it. JSON Lines "
             "and tables are streamed; Mix in datasets cannot be used with it.")
    packing: bool = field(
        False, title="Pack short records", group="Dataset", applies_to="text",
        help="Put several short records in one row of Max sequence length tokens instead of "
             "padding each (padding-free: records never attend to each other and the loss is "
             "the same). Faster when records are much shorter than the maximum.")


class NetworkConfig(Section):
    rank: int = field(
        16, title="Rank (network dim)", group="Network",
        help="Size of the LoRA matrices. Higher learns more detail and uses more memory; "
             "4-32 is typical.", ge=1, le=1024)
    alpha: float = field(
        16.0, title="Alpha", group="Network",
        help="Scales the LoRA update by alpha / rank. Equal to rank or half of it is usual.",
        gt=0.0, le=4096.0)
    dropout: float = field(
        0.0, title="LoRA dropout", group="Network", advanced=True,
        help="Dropout on the LoRA path.", ge=0.0, lt=1.0)
    target_modules: list[str] = field(
        default_factory=list, title="Target modules", group="Network", advanced=True, widget="lines",
        help="Names of the layers that get a LoRA (e.g. q_proj, v_proj, to_k). Empty uses the "
             "family's defaults.")
    train_text_encoder: bool = field(
        False, title="Train text encoder", group="Network", applies_to="image",
        help="Also put LoRA layers in the text encoder(s). Stronger effect, more memory.")
    stop_text_encoder_training: int = field(
        0, title="Stop text encoder after N steps", group="Network", advanced=True,
        applies_to="image",
        help="Freeze the text encoder's LoRA after this many optimizer steps and train only the "
             "UNet from then on; 0 trains it to the end.", ge=0, le=10_000_000)
    algo: NetworkAlgo = field(
        "lora", title="Network type", group="Network", applies_to="image",
        help="'lora': LoRA on the attention layers. 'locon': LoRA also on the UNet's conv "
             "layers. 'loha' / 'lokr': LyCORIS's Hadamard / Kronecker product layers on the "
             "attention and conv layers, more expressive for their size. All export with "
             "kohya / LyCORIS key names for A1111 and ComfyUI.")
    conv_rank: int = field(
        0, title="Conv rank (conv_dim)", group="Network", advanced=True, applies_to="image",
        help="Rank of the UNet's 3x3 conv layers for locon / loha / lokr; 0 uses the rank. "
             "4-32 is usual, lower than the rank.", ge=0, le=1024)
    conv_alpha: float = field(
        0.0, title="Conv alpha", group="Network", advanced=True, applies_to="image",
        help="Alpha of the conv layers (their update is scaled by conv alpha / conv rank); "
             "0 uses the alpha.", ge=0.0, le=4096.0)
    lokr_factor: int = field(
        -1, title="LoKr factor", group="Network", advanced=True, applies_to="image",
        help="LoKr splits each weight into a Kronecker product whose small factor has this "
             "size; -1 picks the most even split (kohya's network_args factor).",
        ge=-1, le=1024)
    target_preset: TargetPreset = field(
        "default", title="Target layers", group="Network", applies_to="text",
        help="Which layers get a LoRA when Target modules is empty: 'default' the attention "
             "and MLP projections, 'attention' only the attention projections (smaller, "
             "faster), 'all_linear' every linear layer but the output head (PEFT's all-linear).")
    use_dora: bool = field(
        False, title="DoRA", group="Network", advanced=True, applies_to="text",
        help="Weight-decomposed LoRA (PEFT's use_dora): trains each layer's magnitude apart from "
             "its direction. Often better at low ranks; about a third slower and more memory.")
    use_rslora: bool = field(
        False, title="rsLoRA", group="Network", advanced=True, applies_to="text",
        help="Rank-stabilised LoRA: scales the update by alpha / sqrt(rank) instead of alpha / "
             "rank, so high ranks keep learning. With it, alpha = 1-2 is usual.")
    init_lora_weights: LoraInit = field(
        "default", title="Initialisation", group="Network", advanced=True, applies_to="text",
        help="'default': B = 0, training starts from the base model. 'gaussian': A from a "
             "Gaussian. 'pissa' / 'olora': start from the weights' principal directions (SVD / "
             "QR), which learns faster; exported as a plain LoRA for the original base. "
             "'loftq': for a 4-bit base, starts from what quantisation lost.")
    loraplus_lr_ratio: float | None = field(
        None, title="LoRA+ ratio", group="Network", advanced=True, applies_to="text", unset="off",
        help="LoRA+: the B matrices learn this many times faster than A (PEFT's LoRA+ "
             "optimizer groups). 16 is the paper's value; empty turns it off.", ge=1.0, le=1024.0)
    modules_to_save: list[str] = field(
        default_factory=list, title="Modules trained in full", group="Network", advanced=True,
        applies_to="text", widget="lines",
        help="Layers trained whole and saved with the adapter, e.g. lm_head and embed_tokens "
             "when you added tokens. A full copy of each: the adapter grows by their size.")


class OptimizerConfig(Section):
    optimizer: Optimizer = field(
        "AdamW", title="Optimizer", group="Optimizer",
        help="AdamW is the safe default; the 8-bit variants save memory and need an NVIDIA GPU "
             "(bitsandbytes). Prodigy and DAdaptAdam find their own step size (learning rate 1.0); "
             "AdamWScheduleFree needs no schedule. These three need pip install "
             "\"lora-studio[optimizers]\".")
    learning_rate: float = field(
        1e-4, title="Learning rate", group="Optimizer",
        help="Step size of the optimizer. 1e-4 for most LoRAs.", gt=0.0, le=1.0)
    unet_lr: float | None = field(
        None, title="UNet learning rate", group="Optimizer", advanced=True, applies_to="image",
        unset="same as learning rate",
        help="Separate learning rate for the UNet; empty uses the learning rate.", gt=0.0, le=1.0)
    text_encoder_lr: float | None = field(
        None, title="Text encoder learning rate", group="Optimizer", advanced=True, applies_to="image",
        unset="same as learning rate",
        help="Separate learning rate for the text encoder(s); empty uses the learning rate.",
        gt=0.0, le=1.0)
    weight_decay: float = field(
        0.01, title="Weight decay", group="Optimizer", advanced=True,
        help="Decoupled weight decay.", ge=0.0, le=1.0)
    lr_scheduler: Scheduler = field(
        "constant", title="LR scheduler", group="Optimizer",
        help="How the learning rate changes over the run.")
    lr_warmup_steps: int = field(
        0, title="Warmup steps", group="Optimizer",
        help="Optimizer steps over which the learning rate rises from 0.", ge=0, le=1_000_000)
    lr_scheduler_num_cycles: int = field(
        1, title="Scheduler cycles", group="Optimizer", advanced=True,
        help="How often 'cosine_with_restarts' restarts from the full rate (hard restarts).",
        ge=1, le=1000)
    lr_scheduler_power: float = field(
        1.0, title="Scheduler power", group="Optimizer", advanced=True,
        help="Power of the 'polynomial' decay; 1 is a straight line.", gt=0.0, le=100.0)
    adafactor_relative_step: bool = field(
        False, title="Adafactor relative step", group="Optimizer", advanced=True,
        help="Adafactor sets its own step size from the step count and the weights' scale (the "
             "paper's setting); the learning rate and the LR scheduler are then not used.")
    adafactor_warmup_init: bool = field(
        False, title="Adafactor warmup init", group="Optimizer", advanced=True,
        help="With relative step: start from a tiny step size that grows with the step count.")
    beta1: float | None = field(
        None, title="Beta 1", group="Optimizer", advanced=True, unset="the optimizer's own",
        help="Decay of the optimizer's running mean of the gradient (Adam's beta1; every "
             "optimizer but Adafactor); empty uses the optimizer's own (0.9).", ge=0.0, lt=1.0)
    beta2: float | None = field(
        None, title="Beta 2", group="Optimizer", advanced=True, unset="the optimizer's own",
        help="Decay of the running mean of the squared gradient (Adam's beta2; every optimizer "
             "but Adafactor); empty uses the optimizer's own (0.999, Lion's 0.99). 0.99 reacts "
             "faster on small datasets.", ge=0.0, lt=1.0)
    d_coef: float = field(
        1.0, title="Prodigy d_coef", group="Optimizer", advanced=True,
        help="Prodigy multiplies the step size it estimates by this: 2 learns faster, 0.5 "
             "slower. Change it rather than the learning rate.", gt=0.0, le=1000.0)
    decouple: bool = field(
        True, title="Decoupled weight decay", group="Optimizer", advanced=True,
        help="Prodigy and DAdaptAdam: weight decay as AdamW applies it (off: added to the "
             "gradient, as Adam does).")
    use_bias_correction: bool = field(
        False, title="Bias correction", group="Optimizer", advanced=True,
        help="Prodigy and DAdaptAdam: Adam's bias correction in the step size estimate, which "
             "damps the first steps.")
    safeguard_warmup: bool = field(
        False, title="Safeguard warmup", group="Optimizer", advanced=True,
        help="Prodigy: leave the warmup's small rates out of its step size estimate, so it "
             "does not grow too large. Use it with warmup steps.")
    max_grad_norm: float = field(
        1.0, title="Max gradient norm", group="Optimizer", advanced=True,
        help="Gradients are clipped to this norm; 0 disables clipping.", ge=0.0, le=1000.0)


class TrainingConfig(Section):
    epochs: int = field(
        1, title="Epochs", group="Training",
        help="Passes over the dataset (ignored when max steps is set).", ge=1, le=10_000)
    max_steps: int = field(
        0, title="Max steps", group="Training",
        help="Stop after this many optimizer steps; 0 uses epochs.", ge=0, le=10_000_000)
    early_stopping_patience: int = field(
        0, title="Early stopping patience", group="Training", advanced=True,
        help="Stop when this many evaluations in a row found no lower eval loss than the best "
             "one; 0 trains to the end.", ge=0, le=10_000)
    early_stopping_metric: EvalMetric = field(
        "eval_loss", title="Early stopping metric", group="Training", advanced=True,
        applies_to="text",
        help="What 'better' means for early stopping and the best checkpoint: a lower eval "
             "loss, or a higher ROUGE-L, BLEU or exact match of the answers generated for the "
             "held-out records (Generated eval records must be above 0).")
    batch_size: int = field(
        1, title="Batch size", group="Training",
        help="Samples per step on each GPU. Lower it first when you run out of memory.", ge=1, le=1024)
    gradient_accumulation_steps: int = field(
        1, title="Gradient accumulation", group="Training",
        help="Steps whose gradients are summed before one optimizer step: a larger effective batch "
             "without more memory.", ge=1, le=1024)
    mixed_precision: MixedPrecision = field(
        "no", title="Mixed precision", group="Training",
        help="bf16 on RTX 30xx and newer, fp16 on older cards, 'no' on CPU.")
    gradient_checkpointing: bool = field(
        False, title="Gradient checkpointing", group="Training",
        help="Recompute activations in the backward pass: much less memory, about 20-30% slower.")
    seed: int = field(
        42, title="Seed", group="Training", advanced=True,
        help="Random seed; the same seed gives the same run.", ge=0, le=2**32 - 1)
    noise_offset: float = field(
        0.0, title="Noise offset", group="Training", advanced=True, applies_to="image",
        help="Adds a small constant to the noise so the model learns very dark and bright images. "
             "0.05-0.1 is typical.", ge=0.0, le=1.0)
    min_snr_gamma: float = field(
        0.0, title="Min-SNR gamma", group="Training", advanced=True, applies_to="image",
        help="Min-SNR loss weighting; 5 is the paper's value, 0 disables it.", ge=0.0, le=100.0)
    processes: int = field(
        1, title="GPUs", group="Training", advanced=True,
        help="Number of GPUs (processes) to train on, through accelerate.", ge=1, le=64)


class OutputConfig(Section):
    output_name: str = field(
        "my_lora", title="Output name", group="Output",
        help="Name of the run and of the exported file.", min_length=1, max_length=120,
        pattern=r"^[^/\\:*?\"<>|]+$")
    output_dir: str = field(
        "runs", title="Runs folder", group="Output", widget="dir", local_path=True,
        help="Folder the run directories are created in.")
    log_with: LogWith = field(
        "none", title="Also log to", group="Output", advanced=True,
        help="TensorBoard writes event files to the run's tensorboard/ folder (pip install "
             "\"lora-studio[logging]\"); W&B logs to your Weights & Biases account when wandb is "
             "installed and you are logged in. Loss, learning rate, eval loss and samples.")
    save_every_n_steps: int = field(
        0, title="Save every N steps", group="Output",
        help="Write a resumable checkpoint every N optimizer steps; 0 only at the end.", ge=0,
        le=10_000_000)
    save_every_n_epochs: int = field(
        0, title="Save every N epochs", group="Output",
        help="Write a resumable checkpoint at the end of every N epochs; 0 never. Image runs "
             "also write that epoch's LoRA to exports/ as <name>-000001.safetensors (kohya "
             "format) to compare epochs in ComfyUI or A1111.", ge=0, le=10_000)
    save_last_n: int = field(
        0, title="Keep last N checkpoints", group="Output",
        help="Delete older checkpoints as new ones are complete, keeping the newest N and the "
             "best evaluated one; 0 keeps them all. The per-epoch LoRA files in exports/ are "
             "all kept.", ge=0, le=100_000)
    save_precision: SavePrecision = field(
        "fp32", title="Save precision", group="Output", applies_to="image",
        help="Precision of the LoRA files the run exports: fp16 or bf16 halve their size, fp32 "
             "keeps the trained weights as they are. Checkpoints and final/ stay fp32.")
    eval_every_n_steps: int = field(
        0, title="Evaluate every N steps", group="Output",
        help="Measure the loss on the held-out records or images every N optimizer steps "
             "(and after the last one); 0 only after the last. The best evaluated checkpoint "
             "is what is exported.", ge=0, le=10_000_000)
    eval_generate_records: int = field(
        8, title="Generated eval records", group="Output", advanced=True, applies_to="text",
        help="At each evaluation the model answers this many held-out records (greedy) and "
             "the answers are scored against the records' own: BLEU (0-100), ROUGE-L and exact "
             "match (0-1). Needs Loss on responses only and pip install \"lora-studio[metrics]\"; "
             "0 measures the loss only.", ge=0, le=1000)
    sample_every_n_steps: int = field(
        0, title="Sample every N steps", group="Output",
        help="Generate samples from the prompts every N optimizer steps; 0 never.", ge=0,
        le=10_000_000)
    sample_every_n_epochs: int = field(
        0, title="Sample every N epochs", group="Output",
        help="Generate samples from the prompts at the end of every N epochs; 0 never.", ge=0,
        le=10_000)
    sample_prompts: list[str] = field(
        default_factory=list, title="Sample prompts", group="Output", widget="lines",
        help="One prompt a line, used for samples during training. An image prompt may end "
             "with kohya's options: --n negative prompt, --w / --h size, --s steps, --l CFG "
             "scale, --d seed, --ss sampler.")
    sample_steps: int = field(
        20, title="Sample inference steps", group="Output", advanced=True, applies_to="image",
        help="Denoising steps per sample image.", ge=1, le=200)
    sample_sampler: SamplerName = field(
        "Euler a", title="Sample sampler", group="Output", advanced=True, applies_to="image",
        help="Sampler of the sample images; a prompt's --ss option overrides it.")
    sample_max_new_tokens: int = field(
        48, title="Sample length (tokens)", group="Output", advanced=True, applies_to="text",
        help="New tokens generated per text sample.", ge=1, le=4096)


class JobConfig(Section):
    schema_version: int = Field(SCHEMA_VERSION, title="Schema version")
    model: ModelConfig = Field(default_factory=ModelConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @property
    def kind(self) -> Literal["text", "image", "unknown"]:
        """'text' or 'image' from the declared family; 'unknown' while it is 'auto'."""
        family = self.model.family
        if family == "auto":
            return "unknown"
        return "text" if family == "text" else "image"


SECTIONS: dict[str, type[Section]] = {
    name: info.annotation  # type: ignore[misc]
    for name, info in JobConfig.model_fields.items()
    if name != "schema_version"
}
