"""Every validation rule, on tiny stand-in models and datasets (no weights loaded)."""
import copy
import json
import os
import sys
from dataclasses import dataclass, field

import pytest

from lora_studio.config.fields import set_in
from lora_studio.config.findings import has_errors
from lora_studio.config.gpu import GIB, GpuFacts
from lora_studio.config.schema import JobConfig
from lora_studio.config.validate import RULES, check, estimate_total_steps, validate
from lora_studio.data.captions import CAPTION_MAX_BYTES
from tiny_models import (gpt2_folder, llama_folder, sd1_single_file, sd2_single_file,
                         sd_diffusers_folder, sdxl_single_file, tiny_png_bytes, write_json)

RTX_3060 = GpuFacts("NVIDIA GeForce RTX 3060", 12 * GIB, supports_bf16=True, cuda_available=True,
                    device_count=1)
T4 = GpuFacts("Tesla T4", 16 * GIB, supports_bf16=False, cuda_available=True, device_count=1)
RTX_2060 = GpuFacts("NVIDIA GeForce RTX 2060", 6 * GIB, supports_bf16=False, cuda_available=True,
                    device_count=1)
CPU = GpuFacts()


def _images(folder, n, caption=b"a photo of sks", name="img"):
    folder.mkdir(parents=True, exist_ok=True)
    png = tiny_png_bytes()
    for i in range(n):
        (folder / f"{name}{i}.png").write_bytes(png)
        if caption is not None:
            (folder / f"{name}{i}.txt").write_bytes(caption)
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Named paths of stand-in models and datasets, shared by all cases."""
    d = tmp_path_factory.mktemp("world")
    w = {
        "llama": llama_folder(d / "llama", positions=2048),
        "llama768": llama_folder(d / "llama 768", hidden=768, heads=12, kv_heads=12, inter=3072),
        "gpt2": gpt2_folder(d / "gpt2"),
        "sd15": sd_diffusers_folder(d / "sd15"),
        "sdxl_fixed_vae": sd_diffusers_folder(d / "sdxl", xl=True, vae_force_upcast=False),
        "sd1_file": sd1_single_file(d / "sd15 single.safetensors"),
        "sd2_file": sd2_single_file(d / "sd2.safetensors"),
        "sdxl_file": sdxl_single_file(d / "sdxl single.safetensors"),
        "config_only": llama_folder(d / "config only", weights=False),
        "missing": d / "does not exist",
        "images": _images(d / "images", 4),
        "one_image": _images(d / "one image", 1),
        "reg": _images(d / "reg" / "1_dog", 3, caption=None).parent,
        "uncaptioned": _images(_images(d / "uncaptioned", 2), 7, caption=None, name="raw"),
        "blank_captions": _images(d / "blank", 3, caption=b"\xef\xbb\xbf \r\n"),
        "zero_folder": d / "zero",
        "empty_dir": d / "empty",
        "jsonl": d / "chat.jsonl",
        "empty_jsonl": d / "empty.jsonl",
        "bad_json": d / "bad.json",
        "a_file": d / "a file.txt",
    }
    _images(d / "zero" / "0_unused", 1)
    _images(d / "reg", 1, caption=None, name="loose")  # a reg image without a class folder
    _images(d / "zero" / "3_used", 2)
    (d / "empty").mkdir()
    w["jsonl"].write_text("\n".join(json.dumps({"prompt": f"q{i}", "response": f"a{i}"})
                                    for i in range(20)), encoding="utf-8")
    w["empty_jsonl"].write_text("\n\n", encoding="utf-8")
    w["bad_json"].write_text('[{"prompt": "x",', encoding="utf-8")
    w["a_file"].write_text("x")
    ckpt = d / "old.ckpt"
    ckpt.write_bytes(b"pickle")
    w["ckpt"] = ckpt
    w["bin_folder"] = llama_folder(d / "bin only", weights=False)
    (w["bin_folder"] / "pytorch_model.bin").write_bytes(b"x")
    broken = d / "broken.safetensors"
    broken.write_bytes(b"\x00" * 4)
    w["broken"] = broken
    w["bert"] = write_json(d / "bert" / "config.json", {
        "model_type": "bert", "architectures": ["BertModel"], "hidden_size": 32,
        "num_attention_heads": 2}).parent
    w["runs"] = d / "runs"
    hostile = _images(d / "hostile" / "2_ok", 2)
    os.mkfifo(hostile / "pipe.txt")             # a caption that would block a reader
    (hostile / "pipe.png").write_bytes(tiny_png_bytes())
    (hostile / "loop").symlink_to(hostile, target_is_directory=True)
    (hostile / "huge.png").write_bytes(tiny_png_bytes())
    (hostile / "huge.txt").write_bytes(b"x" * (CAPTION_MAX_BYTES + 1))
    (hostile / "utf16.png").write_bytes(tiny_png_bytes())
    (hostile / "utf16.txt").write_bytes("sks, no BOM".encode("utf-16-le"))
    (hostile / "layers.psd").write_bytes(b"8BPS")
    (hostile / "scan.heic").write_bytes(b"x")
    _images(d / "hostile" / "30000000_x", 1)
    _images(d / "hostile" / ("9" * 250 + "_y"), 1)  # the longest name a disk takes
    w["hostile"] = d / "hostile"
    w["concept_folder"] = _images(d / "levels" / "img" / "4_demo", 2)  # opened one level deep
    w["levels_project"] = d / "levels"                                 # one level high
    w["levels_img"] = d / "levels" / "img"                             # the right one
    texts = d / "texts"
    texts.mkdir()
    (texts / "a.jsonl").write_text(json.dumps({"prompt": "q", "response": "a"}), encoding="utf-8")
    os.mkfifo(texts / "b.jsonl")
    w["texts"] = texts
    return w


def text_job(world) -> dict:
    return {"model": {"path": str(world["llama"]), "family": "text"},
            "dataset": {"path": str(world["jsonl"])},
            "output": {"output_dir": str(world["runs"])}}


def image_job(world) -> dict:
    return {"model": {"path": str(world["sd15"]), "family": "sd1"},
            "dataset": {"path": str(world["images"])},
            "output": {"output_dir": str(world["runs"])}}


def build(world, kind: str, overrides: dict) -> dict:
    data = copy.deepcopy(text_job(world) if kind == "text" else image_job(world))
    for path, value in overrides.items():
        if isinstance(value, str) and value.startswith("@"):
            name, _, rest = value[1:].partition("/")
            value = str(world[name] / rest) if rest else str(world[name])
        set_in(data, path, value)
    return data


@pytest.mark.parametrize("kind", ["text", "image"])
@pytest.mark.parametrize("gpu", [None, RTX_3060])
def test_baseline_jobs_are_clean(world, kind, gpu):
    job, findings = check(build(world, kind, {}), gpu=gpu)
    assert [f for f in findings if f.level != "info"] == []
    assert job.kind == kind


@dataclass
class Case:
    rule: str
    kind: str
    overrides: dict
    level: str
    path: str
    gpu: object = None
    needles: tuple = field(default_factory=tuple)  # text the message + hint must contain
    hide: tuple = ()  # packages made impossible to import for the case


CASES = [
    Case("model-path-empty", "text", {"model.path": " "}, "error", "model.path"),
    Case("model-not-found", "text", {"model.path": "@missing"}, "error", "model.path",
         needles=("does not exist",)),
    Case("model-pickle", "image", {"model.path": "@ckpt"}, "error", "model.path",
         needles=("Allow pickle checkpoints",)),
    Case("model-pickle-weights", "text", {"model.path": "@bin_folder"}, "error", "model.path"),
    Case("model-unreadable", "image", {"model.path": "@broken"}, "error", "model.path",
         needles=("broken.safetensors",)),
    Case("model-no-weights", "text", {"model.path": "@config_only"}, "error", "model.path"),
    Case("model-uninspectable", "image", {"model.path": "@ckpt", "model.allow_pickle": True},
         "info", "model.path"),
    Case("family-unknown", "image", {"model.path": "@ckpt", "model.allow_pickle": True,
                                     "model.family": "auto"}, "error", "model.family"),
    Case("family-mismatch", "image", {"model.family": "sdxl"}, "error", "model.family",
         needles=("Stable Diffusion 1.x", "'sd1'")),
    Case("family-detected", "image", {"model.family": "auto", "model.path": "@sdxl_file",
                                      "dataset.resolution": 1024}, "info", "model.family",
         needles=("SDXL (single-file)",)),
    Case("not-causal-lm", "text", {"model.path": "@bert"}, "warning", "model.path",
         needles=("BertModel",)),
    Case("dataset-path-empty", "image", {"dataset.path": ""}, "error", "dataset.path"),
    Case("dataset-missing", "text", {"dataset.path": "@missing"}, "error", "dataset.path"),
    Case("dataset-unreadable", "text", {"dataset.path": "@bad_json"}, "error", "dataset.path",
         needles=("bad.json", "line 1")),
    Case("dataset-format", "image", {"dataset.path": "@jsonl"}, "error", "dataset.path"),
    Case("dataset-format", "text", {"dataset.path": "@images"}, "error", "dataset.path",
         needles=("folder of images",)),
    Case("format-vs-kind", "text", {"dataset.format": "images"}, "error", "dataset.format"),
    Case("format-vs-kind", "image", {"dataset.format": "alpaca"}, "error", "dataset.format"),
    Case("dataset-empty", "image", {"dataset.path": "@empty_dir"}, "error", "dataset.path",
         needles=("N_name",)),
    Case("dataset-empty", "text", {"dataset.path": "@empty_jsonl"}, "error", "dataset.path"),
    Case("images-uncaptioned", "image", {"dataset.path": "@uncaptioned"}, "warning", "dataset.path",
         needles=("7 of 9 images", "raw0.png, raw1.png, raw2.png, raw3.png, raw4.png and 2 more")),
    Case("captions-empty", "image", {"dataset.path": "@blank_captions"}, "warning", "dataset.path",
         needles=("3 caption file(s)", "img0.txt")),
    Case("folders-skipped", "image", {"dataset.path": "@zero_folder"}, "info", "dataset.path",
         needles=("0_unused",)),
    Case("repeat-folder-level", "image", {"dataset.path": "@concept_folder"}, "warning",
         "dataset.path", needles=("'4_demo', which means 4 repeats", "8 samples per epoch instead of 2")),
    Case("repeat-folder-level", "image", {"dataset.path": "@levels_project"}, "warning",
         "dataset.path", needles=("'levels' is one level above", "Open 'img'", "8 samples per epoch")),
    Case("reg-missing", "image", {"dataset.reg_path": "@missing"}, "error", "dataset.reg_path",
         needles=("was not found", "N_class")),
    Case("reg-empty", "image", {"dataset.reg_path": "@empty_dir"}, "warning", "dataset.reg_path",
         needles=("holds no images",)),
    Case("reg-nested", "image", {"dataset.reg_path": "@images"}, "error", "dataset.reg_path",
         needles=("also the dataset folder",)),
    Case("reg-counts", "image", {"dataset.reg_path": "@reg"}, "info", "dataset.reg_path",
         needles=("4 regularisation image(s) in 2 folder(s)", "trains 4 of them beside the 4")),
    Case("reg-without-class", "image", {"dataset.reg_path": "@reg"}, "warning", "dataset.reg_path",
         needles=("loose0.png", "'1_dog'")),
    Case("prior-weight-without-reg", "image", {"dataset.prior_loss_weight": 0.5}, "info",
         "dataset.prior_loss_weight"),
    Case("subset-invalid", "image", {"dataset.subsets": ["x; colour=red"]}, "error",
         "dataset.subsets", needles=("'colour=red' is not one of the settings",)),
    Case("subset-folder-missing", "image", {"dataset.subsets": ["nowhere"]}, "error",
         "dataset.subsets", needles=("Concept folder 'nowhere'",)),
    Case("subset-empty", "image", {"dataset.subsets": [".", "../empty"]}, "warning",
         "dataset.subsets", needles=("'../empty'",)),
    Case("no-upscale-without-buckets", "image", {"dataset.bucket_no_upscale": True,
                                                 "dataset.enable_bucket": False}, "info",
         "dataset.bucket_no_upscale"),
    Case("quant-both", "text", {"model.load_in_4bit": True, "model.load_in_8bit": True}, "error",
         "model.load_in_8bit"),
    Case("quant-image-job", "image", {"model.load_in_4bit": True}, "error", "model.load_in_4bit"),
    Case("quant-needs-cuda", "text", {"model.load_in_4bit": True}, "error", "model.load_in_4bit",
         gpu=CPU),
    Case("quant-needs-cuda", "text", {"model.load_in_8bit": True}, "error", "model.load_in_8bit",
         gpu=CPU),
    Case("optimizer-8bit-needs-cuda", "text", {"optimizer.optimizer": "PagedAdamW8bit"}, "error",
         "optimizer.optimizer", gpu=CPU, needles=("AdamW",)),
    Case("bf16-unsupported", "text", {"training.mixed_precision": "bf16"}, "error",
         "training.mixed_precision", gpu=T4, needles=("Tesla T4", "fp16")),
    Case("bf16-unsupported", "text", {"model.dtype": "bfloat16"}, "error", "model.dtype", gpu=T4),
    Case("precision-on-cpu", "text", {"training.mixed_precision": "fp16"}, "error",
         "training.mixed_precision", gpu=CPU),
    Case("precision-on-cpu", "text", {"training.mixed_precision": "bf16"}, "warning",
         "training.mixed_precision", gpu=CPU),
    Case("dtype-vs-precision", "text", {"model.dtype": "float16", "training.mixed_precision": "bf16"},
         "warning", "model.dtype", gpu=RTX_3060),
    Case("fp16-sdxl-vae", "image", {"model.path": "@sdxl_file", "model.family": "sdxl",
                                    "dataset.resolution": 1024, "training.mixed_precision": "fp16"},
         "warning", "training.mixed_precision", gpu=RTX_3060, needles=("NaN", "bf16")),
    Case("sdxl-low-vram", "image", {"model.path": "@sdxl_file", "model.family": "sdxl",
                                    "dataset.resolution": 1024}, "warning",
         "training.gradient_checkpointing", gpu=RTX_2060, needles=("6 GB",)),
    Case("processes-vs-gpus", "text", {"training.processes": 2}, "error", "training.processes",
         gpu=RTX_3060),
    Case("processes-vs-gpus", "text", {"training.processes": 2}, "warning", "training.processes",
         gpu=CPU, needles=("share the CPU",)),
    Case("alpha-vs-rank", "text", {"network.rank": 4, "network.alpha": 16}, "warning", "network.alpha",
         needles=("x4",)),
    Case("rank-exceeds-width", "text", {"model.path": "@llama768", "network.rank": 1024,
                                        "network.target_modules": ["q_proj"], "network.alpha": 1024},
         "error", "network.rank", needles=("rank 1024 exceeds q_proj width 768; valid 1..768",)),
    Case("rank-exceeds-width", "image", {"network.rank": 64, "network.alpha": 64}, "error",
         "network.rank", needles=("width 32; valid 1..32",)),
    Case("target-modules-absent", "text", {"network.target_modules": ["q_proj", "qkv"]}, "error",
         "network.target_modules", needles=("qkv not found", "k_proj, lm_head")),
    Case("target-modules-absent", "image", {"network.target_modules": ["to_q", "q_proj"]}, "error",
         "network.target_modules", needles=("turn on 'Train text encoder'",)),
    Case("target-modules-absent", "image", {"model.path": "@sd1_file", "network.target_modules": ["qkv"]},
         "warning", "network.target_modules"),
    Case("train-te-text-job", "text", {"network.train_text_encoder": True}, "warning",
         "network.train_text_encoder"),
    Case("te-lr-without-te", "image", {"optimizer.text_encoder_lr": 5e-5}, "warning",
         "optimizer.text_encoder_lr"),
    Case("separate-lr-text-job", "text", {"optimizer.unet_lr": 1e-4}, "warning", "optimizer.unet_lr"),
    Case("lr-very-high", "image", {"optimizer.unet_lr": 5e-3}, "warning", "optimizer.unet_lr",
         needles=("0.005", "1e-4")),
    Case("warmup-longer-than-run", "text", {"optimizer.lr_warmup_steps": 50,
                                            "optimizer.lr_scheduler": "cosine"}, "warning",
         "optimizer.lr_warmup_steps", needles=("about 20 steps", "e.g. 2")),
    Case("warmup-with-constant", "text", {"optimizer.lr_warmup_steps": 2}, "warning",
         "optimizer.lr_warmup_steps", needles=("constant_with_warmup",)),
    Case("steps-and-epochs", "text", {"training.max_steps": 10, "training.epochs": 3}, "warning",
         "training.epochs"),
    Case("batch-larger-than-dataset", "image", {"training.batch_size": 8}, "error",
         "training.batch_size", needles=("4 samples (images x repeats)", "to 4 or less")),
    Case("batch-larger-than-dataset", "text", {"training.batch_size": 16, "training.processes": 2},
         "error", "training.batch_size", needles=("16 per GPU x 2 GPUs",)),
    Case("accumulation-exceeds-dataset", "image", {"training.batch_size": 2,
                                                   "training.gradient_accumulation_steps": 4},
         "warning", "training.gradient_accumulation_steps"),
    Case("save-every-beyond-run", "text", {"output.save_every_n_steps": 500}, "warning",
         "output.save_every_n_steps"),
    Case("sample-every-beyond-run", "text", {"output.sample_every_n_steps": 500,
                                             "output.sample_prompts": ["hello"]}, "warning",
         "output.sample_every_n_steps"),
    Case("sample-prompts-missing", "image", {"output.sample_every_n_steps": 2,
                                             "output.sample_prompts": ["  "]}, "warning",
         "output.sample_prompts"),
    Case("prompts-without-sampling", "image", {"output.sample_prompts": ["a cat"]}, "info",
         "output.sample_every_n_steps"),
    Case("save-epochs-beyond-run", "text", {"training.epochs": 3, "output.save_every_n_epochs": 3},
         "warning", "output.save_every_n_epochs", needles=("about 3 epochs",)),
    Case("sample-epochs-beyond-run", "image", {"training.max_steps": 2,
                                               "output.sample_every_n_epochs": 1,
                                               "output.sample_prompts": ["a cat"]},
         "warning", "output.sample_every_n_epochs", needles=("about 1 epoch:",)),
    Case("keep-last-without-saves", "text", {"output.save_last_n": 2}, "info", "output.save_last_n"),
    Case("sample-prompt-options", "image", {"output.sample_every_n_epochs": 1,
                                            "output.sample_prompts": ["a cat --w 512",
                                                                      "a dog --s many --ss lms"]},
         "warning", "output.sample_prompts",
         needles=("Sample prompt 2 ('a dog --s many --ss lms')", "--s many", "sampler 'lms'")),
    Case("output-dir-not-writable", "text", {"output.output_dir": "@a_file/runs"}, "error",
         "output.output_dir", needles=("is a file",)),
    Case("output-dir-not-writable", "text", {"output.output_dir": ""}, "error", "output.output_dir"),
    Case("resolution-multiple-of-8", "image", {"dataset.resolution": 516}, "error",
         "dataset.resolution", needles=("512 or 576",)),
    Case("resolution-multiple-of-64", "image", {"dataset.resolution": 520}, "warning",
         "dataset.resolution"),
    Case("resolution-vs-model", "image", {"dataset.resolution": 1024}, "warning", "dataset.resolution",
         needles=("native 512",)),
    Case("resolution-vs-model", "image", {"model.path": "@sdxl_file", "model.family": "sdxl"},
         "warning", "dataset.resolution", needles=("native 1024", "blurry")),
    Case("bucket-min-above-max", "image", {"dataset.min_bucket_reso": 1024,
                                           "dataset.max_bucket_reso": 512}, "error",
         "dataset.min_bucket_reso"),
    Case("resolution-outside-buckets", "image", {"dataset.max_bucket_reso": 448}, "warning",
         "dataset.resolution"),
    Case("bucket-step-multiple-of-8", "image", {"dataset.bucket_reso_steps": 12}, "error",
         "dataset.bucket_reso_steps"),
    Case("keep-tokens-without-shuffle", "image", {"dataset.keep_tokens": 1}, "warning",
         "dataset.keep_tokens"),
    Case("caption-dropout-high", "image", {"dataset.caption_dropout_rate": 1.0}, "error",
         "dataset.caption_dropout_rate"),
    Case("caption-dropout-high", "image", {"dataset.caption_dropout_rate": 0.6}, "warning",
         "dataset.caption_dropout_rate"),
    Case("cache-latents-disables-augmentation", "image", {"dataset.flip_aug": True}, "warning",
         "dataset.cache_latents", needles=("Horizontal flip",)),
    Case("cache-to-disk-without-cache", "image", {"dataset.cache_latents": False,
                                                  "dataset.cache_latents_to_disk": True}, "info",
         "dataset.cache_latents_to_disk"),
    Case("v-prediction-on-sd1", "image", {"model.prediction_type": "v_prediction"}, "warning",
         "model.prediction_type"),
    Case("prediction-type-mismatch", "image", {"model.path": "@sd2_file", "model.family": "sd2",
                                               "model.prediction_type": "epsilon",
                                               "dataset.resolution": 768}, "warning",
         "model.prediction_type", needles=("v_prediction",)),
    Case("noise-offset-high", "image", {"training.noise_offset": 0.5}, "warning", "training.noise_offset"),
    Case("max-seq-past-positions", "text", {"dataset.max_seq_length": 4096}, "warning",
         "dataset.max_seq_length", needles=("2048",)),
    Case("max-seq-past-positions", "text", {"model.path": "@gpt2", "dataset.max_seq_length": 512},
         "error", "dataset.max_seq_length", needles=("crash", "to 128 or less")),
    Case("responses-only-plain-text", "text", {"dataset.format": "text"}, "warning",
         "dataset.train_on_responses_only"),
    Case("setting-not-used", "text", {"training.noise_offset": 0.1, "dataset.flip_aug": True}, "info",
         "dataset.flip_aug", needles=("Horizontal flip, Noise offset only apply to image models",)),
    Case("preset-allows-pickle", "text", {"model.allow_pickle": True}, "warning", "model.allow_pickle",
         needles=("can carry code", "weights-only")),
    Case("preset-custom-template", "text",
         {"dataset.chat_template": "{% for m in messages %}{{ m.content }}\n{% endfor %}"}, "info",
         "dataset.chat_template", needles=("51 characters of Jinja", "renders a sample")),
    Case("chat-template-fails", "text", {"dataset.chat_template": "{{ raise_exception('no') }}"},
         "error", "dataset.chat_template", needles=("fails on a sample conversation: no.",)),
    Case("optimizer-option-unused", "text", {"optimizer.d_coef": 2.0,
                                             "optimizer.use_bias_correction": True}, "warning",
         "optimizer.d_coef", needles=("Prodigy d_coef, Bias correction are set", "AdamW")),
    Case("optimizer-option-unused", "text", {"optimizer.optimizer": "Adafactor",
                                             "optimizer.beta2": 0.99}, "warning",
         "optimizer.beta2", needles=("Adafactor does not use it",)),
    Case("eval-without-data", "text", {"output.eval_every_n_steps": 10}, "warning",
         "output.eval_every_n_steps", needles=("no held-out records",)),
    Case("eval-without-data", "image", {"training.early_stopping_patience": 3}, "warning",
         "training.early_stopping_patience", needles=("no held-out images",)),
    Case("eval-path-missing", "text", {"dataset.eval_path": "@missing"}, "error", "dataset.eval_path"),
    Case("eval-path-missing", "image", {"dataset.eval_path": "@missing"}, "error",
         "dataset.eval_path", needles=("folder of eval images", "does not exist")),
    Case("eval-images-empty", "image", {"dataset.eval_path": "@empty_dir"}, "error",
         "dataset.eval_path", needles=("empty", "holds no images", "Held-out share")),
    Case("eval-images-empty", "image", {"dataset.eval_path": "@a_file"}, "error",
         "dataset.eval_path", needles=("a file.txt",)),
    Case("eval-images", "image", {"dataset.eval_path": "@blank_captions"}, "info",
         "dataset.eval_path", needles=("3 image(s) of 'blank'",)),
    Case("eval-images", "image", {"dataset.eval_split": 0.25}, "info", "dataset.eval_split",
         needles=("1 of 4 image(s) are held out",)),
    Case("eval-split-leaves-none", "image", {"dataset.eval_split": 0.1,
                                             "dataset.path": "@one_image"}, "error",
         "dataset.eval_split", needles=("10% of 1 image(s) leaves none",)),
    Case("patience-without-evaluations", "text", {"dataset.eval_split": 0.1,
                                                  "training.early_stopping_patience": 2},
         "warning", "training.early_stopping_patience"),
    Case("eval-metric-unmeasured", "text", {"training.early_stopping_metric": "rougeL",
                                            "output.eval_generate_records": 0}, "error",
         "training.early_stopping_metric", needles=("'Generated eval records' is 0",)),
    Case("eval-metric-unmeasured", "text", {"training.early_stopping_metric": "bleu",
                                            "dataset.train_on_responses_only": False}, "error",
         "training.early_stopping_metric", needles=("where the answer starts",)),
    Case("eval-metrics-not-installed", "text", {"dataset.eval_split": 0.1}, "warning",
         "output.eval_generate_records", hide=("rouge_score",),
         needles=("rouge_score", 'pip install "lora-studio[metrics]"')),
    Case("eval-metrics-not-installed", "text", {"dataset.eval_split": 0.1,
                                                "training.early_stopping_metric": "exact_match"},
         "error", "output.eval_generate_records", hide=("sacrebleu",)),
    Case("streaming-with-mix", "text", {"dataset.streaming": True, "dataset.mix": ["@jsonl"]},
         "error", "dataset.mix"),
    Case("dataset-columns-invalid", "text", {"dataset.columns": ["speaker=who"]}, "error",
         "dataset.columns", needles=("speaker=who",)),
    Case("dataset-mix-invalid", "text", {"dataset.mix": ["no such file.jsonl @ 2"]}, "error",
         "dataset.mix", needles=("'no such file.jsonl' is not a file", "remove the line")),
    Case("dataset-mix-invalid", "text", {"dataset.mix": ["more.jsonl @ many"]}, "error",
         "dataset.mix", needles=("'many' after @ is not a number",)),
    Case("init-mutates-quantized-base", "text", {"network.init_lora_weights": "pissa",
                                                 "model.load_in_4bit": True}, "error",
         "network.init_lora_weights", gpu=RTX_3060, needles=("'loftq'",)),
    Case("loftq-needs-4bit", "text", {"network.init_lora_weights": "loftq"}, "error",
         "network.init_lora_weights"),
    Case("dora-with-mutating-init", "text", {"network.init_lora_weights": "olora",
                                              "network.use_dora": True}, "error", "network.use_dora"),
    Case("modules-to-save-size", "text", {"network.modules_to_save": ["lm_head"]}, "info",
         "network.modules_to_save", needles=("'lm_head' is trained in full",)),
    Case("repeats-too-large", "image", {"dataset.path": "@hostile"}, "error", "dataset.path",
         needles=("'30000000_x'", "asks for 30000000 repeats", "from 1 to 1000")),
    Case("dataset-passed-over", "image", {"dataset.path": "@hostile"}, "warning", "dataset.path",
         needles=("pipe.txt", "is a pipe, a device or a socket")),
    Case("dataset-passed-over", "text", {"dataset.path": "@texts"}, "warning", "dataset.path",
         needles=("b.jsonl", "not a regular file")),
    Case("images-unsupported-format", "image", {"dataset.path": "@hostile"}, "warning",
         "dataset.path", needles=("2 picture(s)", "1 .heic, 1 .psd", "layers.psd", "PNG, JPEG")),
    Case("captions-unreadable", "image", {"dataset.path": "@hostile"}, "warning", "dataset.path",
         needles=("utf16.txt", "NUL characters", "save it as UTF-8")),
    Case("optimizer-package-missing", "image", {"optimizer.optimizer": "Prodigy",
                                                "optimizer.learning_rate": 1.0}, "error",
         "optimizer.optimizer", hide=("prodigyopt",),
         needles=("'prodigyopt'", 'pip install "lora-studio[optimizers]"')),
    Case("adaptive-optimizer-lr", "image", {"optimizer.optimizer": "Prodigy"}, "warning",
         "optimizer.learning_rate", needles=("10,000 times smaller", "1.0")),
    Case("adaptive-optimizer-lr", "image", {"optimizer.optimizer": "DAdaptAdam",
                                            "optimizer.learning_rate": 1.0,
                                            "network.train_text_encoder": True,
                                            "optimizer.text_encoder_lr": 0.05}, "warning",
         "optimizer.text_encoder_lr", needles=("20 times smaller",)),
    Case("relative-step-ignores", "text", {"optimizer.optimizer": "Adafactor",
                                           "optimizer.adafactor_relative_step": True,
                                           "optimizer.lr_scheduler": "cosine"}, "info",
         "optimizer.adafactor_relative_step", needles=("LR scheduler is not used",)),
    Case("adafactor-option-unused", "text", {"optimizer.adafactor_relative_step": True}, "warning",
         "optimizer.adafactor_relative_step", needles=("the optimizer is AdamW",)),
    Case("adafactor-option-unused", "text", {"optimizer.optimizer": "Adafactor",
                                             "optimizer.adafactor_warmup_init": True}, "warning",
         "optimizer.adafactor_warmup_init", needles=("only works with Adafactor's relative step",)),
    Case("schedule-free-scheduler", "text", {"optimizer.optimizer": "AdamWScheduleFree",
                                             "optimizer.lr_scheduler": "cosine"}, "warning",
         "optimizer.lr_scheduler", needles=("'cosine' is not used",)),
    Case("scheduler-option-unused", "text", {"optimizer.lr_scheduler_num_cycles": 3}, "warning",
         "optimizer.lr_scheduler_num_cycles", needles=("'cosine_with_restarts'",)),
    Case("scheduler-option-unused", "text", {"optimizer.lr_scheduler": "cosine",
                                             "optimizer.lr_scheduler_power": 2.0}, "warning",
         "optimizer.lr_scheduler_power", needles=("'polynomial'", "'cosine' does not use it")),
    Case("clip-skip-sdxl", "image", {"model.path": "@sdxl_file", "model.family": "sdxl",
                                     "model.clip_skip": 2}, "warning", "model.clip_skip",
         needles=("penultimate",)),
    Case("network-option-unused", "image", {"network.conv_rank": 8}, "warning", "network.conv_rank",
         needles=("locon",)),
    Case("network-option-unused", "image", {"network.algo": "locon", "network.lokr_factor": 4},
         "warning", "network.lokr_factor"),
    Case("network-option-unused", "image", {"network.algo": "loha", "network.dropout": 0.1},
         "warning", "network.dropout"),
    Case("network-no-diffusers", "image", {"network.algo": "lokr"}, "info", "network.algo",
         needles=("kohya",)),
    Case("stop-te-without-te", "image", {"network.stop_text_encoder_training": 2}, "warning",
         "network.stop_text_encoder_training"),
    Case("stop-te-beyond-run", "image", {"network.train_text_encoder": True, "training.max_steps": 10,
                                         "network.stop_text_encoder_training": 10}, "warning",
         "network.stop_text_encoder_training", needles=("about 10 steps",)),
    *[Case("preset-output-elsewhere", "text", {"output.output_dir": value}, "info", "output.output_dir",
           needles=(value,)) for value in ("~/runs", "../../elsewhere", "runs/../../x", "C:\\Users\\x",
                                           "/var/tmp/runs", "\\\\server\\share")],
    *[Case("output-name-reserved", "text", {"output.output_name": name}, "error", "output.output_name",
           needles=(f"'{name}'", "my_lora")) for name in (".", "..", "CON", "nul.txt", "Com1", "lpt9.lora",
                                                          "name.", "name ")],
]


def test_every_rule_has_a_case_and_there_are_enough():
    assert {c.rule for c in CASES} == set(RULES)
    assert len(RULES) >= 25


@pytest.mark.parametrize("case", CASES, ids=[f"{c.rule}-{i}" for i, c in enumerate(CASES)])
def test_rule(world, case, monkeypatch):
    for package in case.hide:
        monkeypatch.setitem(sys.modules, package, None)
    _, findings = check(build(world, case.kind, case.overrides), gpu=case.gpu)
    hits = [f for f in findings if f.rule == case.rule]
    assert hits, f"{case.rule} not reported; got {[str(f) for f in findings]}"
    finding = hits[0]
    assert (finding.level, finding.path) == (case.level, case.path)
    assert finding.message and finding.hint
    for needle in case.needles:
        assert needle in finding.message + " " + finding.hint, str(finding)
    assert all(f.rule in RULES or f.rule.startswith(("schema-", "unknown-key")) for f in findings)


@pytest.mark.parametrize("kind,overrides,gpu,rule", [
    ("text", {"network.rank": 8, "network.alpha": 16}, None, "alpha-vs-rank"),  # exactly 2x is fine
    ("image", {"network.algo": "locon", "network.conv_rank": 8, "network.conv_alpha": 4}, None,
     "network-option-unused"),
    ("image", {"network.algo": "lokr", "network.lokr_factor": 8}, None, "network-option-unused"),
    ("image", {"network.algo": "locon"}, None, "network-no-diffusers"),
    ("image", {"optimizer.optimizer": "Prodigy", "optimizer.learning_rate": 1.0,
               "optimizer.d_coef": 2.0, "optimizer.safeguard_warmup": True,
               "optimizer.beta2": 0.99}, None, "optimizer-option-unused"),
    ("image", {"optimizer.optimizer": "Lion8bit", "optimizer.beta1": 0.95}, None,
     "optimizer-option-unused"),
    ("image", {"dataset.eval_split": 0.25, "output.eval_every_n_steps": 2}, None,
     "eval-without-data"),
    ("text", {"network.rank": 32, "network.target_modules": ["q_proj"]}, None, "rank-exceeds-width"),
    ("image", {"model.path": "@sdxl_fixed_vae", "model.family": "sdxl", "dataset.resolution": 1024,
               "training.mixed_precision": "fp16"}, RTX_3060, "fp16-sdxl-vae"),
    ("image", {"model.path": "@sdxl_file", "model.family": "sdxl", "dataset.resolution": 1024,
               "training.gradient_checkpointing": True}, RTX_2060, "sdxl-low-vram"),
    ("text", {"training.mixed_precision": "bf16"}, RTX_3060, "bf16-unsupported"),
    ("text", {"model.load_in_4bit": True}, RTX_3060, "quant-needs-cuda"),
    ("text", {"model.load_in_4bit": True}, None, "quant-needs-cuda"),  # unknown hardware: no claim
    ("image", {"network.target_modules": ["attn1.to_q", "ff.net.2"]}, None, "target-modules-absent"),
    ("image", {"network.train_text_encoder": True, "network.rank": 16,
               "network.target_modules": ["to_q", "q_proj"]}, None, "target-modules-absent"),
    ("text", {"training.max_steps": 10}, None, "steps-and-epochs"),
    ("text", {"training.epochs": 3, "output.save_every_n_epochs": 2}, None, "save-epochs-beyond-run"),
    ("text", {"output.save_last_n": 2, "output.save_every_n_epochs": 1}, None,
     "keep-last-without-saves"),
    # a text prompt's " --" is its own text
    ("text", {"output.sample_every_n_steps": 1, "output.sample_prompts": ["a --b c"]}, None,
     "sample-prompt-options"),
    ("image", {"output.sample_every_n_epochs": 1,
               "output.sample_prompts": ["a cat --n dog --w 512 --h 768 --s 20 --l 7 --d 3 --ss ddim"]},
     None, "sample-prompt-options"),
    ("image", {"output.sample_every_n_epochs": 1, "output.sample_prompts": ["a cat"]}, None,
     "prompts-without-sampling"),
    # the adaptive optimizers want lr 1.0; relative step and schedule-free use no rate / warmup as set
    ("image", {"optimizer.optimizer": "Prodigy", "optimizer.learning_rate": 1.0}, None,
     "lr-very-high"),
    ("image", {"optimizer.optimizer": "Prodigy", "optimizer.learning_rate": 1.0}, None,
     "adaptive-optimizer-lr"),
    ("image", {"optimizer.optimizer": "DAdaptAdam", "optimizer.unet_lr": 1.0}, None,
     "adaptive-optimizer-lr"),  # the UNet trains with unet_lr; learning_rate is not used
    ("text", {"optimizer.optimizer": "Adafactor", "optimizer.adafactor_relative_step": True,
              "optimizer.learning_rate": 0.01}, None, "lr-very-high"),
    ("text", {"optimizer.optimizer": "AdamWScheduleFree", "optimizer.lr_warmup_steps": 2}, None,
     "warmup-with-constant"),
    ("text", {"optimizer.optimizer": "AdamWScheduleFree"}, None, "optimizer-package-missing"),
    ("image", {"model.clip_skip": 2}, None, "clip-skip-sdxl"),
    ("image", {"network.train_text_encoder": True, "training.max_steps": 10,
               "network.stop_text_encoder_training": 9}, None, "stop-te-beyond-run"),
    ("image", {"dataset.path": "@levels_img"}, None, "repeat-folder-level"),
    ("image", {"dataset.path": "@zero_folder"}, None, "repeat-folder-level"),
])
def test_rule_stays_quiet_when_fine(world, kind, overrides, gpu, rule):
    _, findings = check(build(world, kind, overrides), gpu=gpu)
    assert rule not in {f.rule for f in findings}


def test_check_merges_schema_findings_errors_first(world):
    data = build(world, "text", {"network.rank": 0, "training.bogus": 1, "output.sample_prompts": ["x"]})
    job, findings = check(data)
    assert [f.rule for f in findings][:1] == ["schema-bounds"]
    levels = [f.level for f in findings]
    assert levels == sorted(levels, key=["error", "warning", "info"].index)
    assert {"unknown-key", "prompts-without-sampling"} <= {f.rule for f in findings}
    assert job.network.rank == 16 and has_errors(findings)


def test_relative_paths_resolve_beside_the_preset(world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = world["llama"].parent
    data = build(world, "text", {"model.path": "llama", "dataset.path": "chat.jsonl"})
    assert not has_errors(check(data, base_dir=base)[1])
    assert {"model-not-found", "dataset-missing"} <= {f.rule for f in check(data)[1]}


def test_uncaptioned_images_do_not_block_but_missing_dataset_does(world):
    assert not has_errors(check(build(world, "image", {"dataset.path": "@uncaptioned"}))[1])
    assert has_errors(check(build(world, "image", {"dataset.path": "@missing"}))[1])


def test_total_steps_estimate():
    job = JobConfig()
    assert estimate_total_steps(job, None) is None
    job.training.epochs, job.training.batch_size, job.training.gradient_accumulation_steps = 3, 2, 2
    assert estimate_total_steps(job, 9) == 3 * 3  # 5 batches -> 3 optimizer steps per epoch
    job.training.max_steps = 7
    assert estimate_total_steps(job, 9) == 7


def test_validate_accepts_any_gpu_like_object(world):
    class Snapshot:  # what a hardware layer might hand over
        name, total_vram_bytes, supports_bf16, cuda_available, device_count = "X", 8 * GIB, False, True, 1
    job, _ = check(build(world, "text", {"training.mixed_precision": "bf16"}))
    assert "bf16-unsupported" in {f.rule for f in validate(job, gpu=Snapshot())}
