import json
import subprocess
import sys

import pytest
from safetensors import safe_open

from lora_studio.config import model_info
from lora_studio.config.model_info import (ModelInfoError, find_in_hf_cache, inspect_model,
                                           matching_layers, read_safetensors_header, short_name,
                                           target_candidates)
from lora_studio.config.paths import resolve_local_path
from tiny_models import (gpt2_folder, llama_folder, sd1_single_file, sd2_single_file,
                         sd_diffusers_folder, sdxl_single_file, write_json, write_safetensors)


def test_no_torch_or_hub_is_imported():
    code = ("import sys, lora_studio.config.validate; "
            "assert 'torch' not in sys.modules and 'huggingface_hub' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("module,short", [
    ("model.layers.0.self_attn.q_proj", "q_proj"),
    ("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0", "to_out.0"),
    ("mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj", "ff.net.0.proj"),
    ("up_blocks.1.attentions.2.transformer_blocks.0.ff.net.2", "ff.net.2"),
    ("h.11.mlp.c_fc", "c_fc")])
def test_short_names_are_what_peft_matches(module, short):
    assert short_name(module) == short


def test_stand_in_checkpoint_is_a_real_safetensors_file(tmp_path):
    path = sdxl_single_file(tmp_path / "sdxl.safetensors")
    with safe_open(str(path), "np") as fh:
        key = next(k for k in fh.keys() if k.endswith("attn2.to_k.weight"))
        assert fh.get_tensor(key).shape == (640, 2048)
    assert read_safetensors_header(path)[key]["shape"] == [640, 2048]


def test_llama_folder_widths_from_all_shards(tmp_path):
    info = inspect_model(str(llama_folder(tmp_path / "llama")))
    assert (info.format, info.family, info.kind, info.model_type) == ("transformers", "text", "text", "llama")
    assert (info.hidden_size, info.num_attention_heads) == (64, 4)
    assert (info.num_key_value_heads, info.head_dim) == (2, 16)
    assert (info.max_position_embeddings, info.vocab_size, info.num_hidden_layers) == (256, 100, 2)
    assert info.causal_lm is True and len(info.weight_files) == 2
    assert info.linear_layers["q_proj"] == (64, 64)
    assert info.linear_layers["k_proj"] == (64, 32)  # grouped-query attention: narrower
    assert info.linear_layers["down_proj"] == (128, 64)
    assert "lm_head" in info.linear_layers  # from the second shard
    assert target_candidates(info)[:3] == ["q_proj", "k_proj", "v_proj"]


def test_text_widths_from_config_when_no_safetensors(tmp_path):
    folder = llama_folder(tmp_path / "m", hidden=768, heads=12, kv_heads=4, inter=3072, weights=False)
    info = inspect_model(str(folder))
    assert info.linear_layers["q_proj"] == (768, 768)
    assert info.linear_layers["k_proj"] == (768, 256)
    assert info.linear_layers["gate_proj"] == (768, 3072)
    assert info.weight_files == () and not info.pickle_weights


def test_gpt2_conv1d_weights_are_read_in_out(tmp_path):
    info = inspect_model(str(gpt2_folder(tmp_path / "g")))
    assert info.linear_layers["c_attn"] == (64, 192)
    assert info.linear_layers["c_proj"] == (64, 64)  # attention c_proj is narrower than the MLP's
    assert info.absolute_positions and info.max_position_embeddings == 128
    config_only = inspect_model(str(gpt2_folder(tmp_path / "g2", weights=False)))
    assert config_only.linear_layers["c_fc"] == (64, 256)


def test_nested_text_config_and_non_causal_models(tmp_path):
    write_json(tmp_path / "mm" / "config.json", {
        "model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"],
        "text_config": {"hidden_size": 640, "num_attention_heads": 4, "max_position_embeddings": 32768}})
    info = inspect_model(str(tmp_path / "mm"))
    assert (info.hidden_size, info.head_dim, info.max_position_embeddings) == (640, 160, 32768)
    assert info.causal_lm is True
    write_json(tmp_path / "bert" / "config.json", {"model_type": "bert", "architectures": ["BertModel"],
                                                   "hidden_size": 32, "num_attention_heads": 2})
    assert inspect_model(str(tmp_path / "bert")).causal_lm is False


def test_diffusers_sd1(tmp_path):
    info = inspect_model(str(sd_diffusers_folder(tmp_path / "sd15")))
    assert (info.format, info.family, info.kind) == ("diffusers", "sd1", "image")
    assert (info.prediction_type, info.native_resolution, info.cross_attention_dim) == ("epsilon", 512, 768)
    assert info.vae_force_upcast is True and info.layers_complete
    assert info.linear_layers["to_out.0"] == (32, 32)
    assert info.linear_layers["ff.net.0.proj"] == (32, 256)
    assert info.linear_layers["proj_in"] == (32, 32)  # a 1x1 conv in SD 1.x
    assert info.text_encoder_layers["fc1"] == (32, 64)
    assert target_candidates(info) == ["to_q", "to_k", "to_v", "to_out.0"]


def test_diffusers_sdxl_from_configs_only(tmp_path):
    folder = sd_diffusers_folder(tmp_path / "xl", xl=True, weights=False,
                                 prediction_type="v_prediction", vae_force_upcast=False)
    info = inspect_model(str(folder))
    assert (info.family, info.prediction_type, info.native_resolution) == ("sdxl", "v_prediction", 1024)
    assert info.vae_force_upcast is False
    assert info.linear_layers["to_q"] == (32, 32) and not info.layers_complete
    assert info.text_encoder_layers["fc2"] == (64, 32)


@pytest.mark.parametrize("pipeline", ["FluxPipeline", "StableDiffusion3Pipeline"])
def test_diffusers_pipeline_we_cannot_train(tmp_path, pipeline):
    write_json(tmp_path / "m" / "model_index.json", {"_class_name": pipeline})
    write_json(tmp_path / "m" / "transformer" / "config.json", {"joint_attention_dim": 4096})
    write_json(tmp_path / "m" / "text_encoder" / "config.json", {"hidden_size": 768})
    with pytest.raises(ModelInfoError, match=pipeline) as err:
        inspect_model(str(tmp_path / "m"))
    assert err.value.reason == "unsupported" and "SDXL" in err.value.hint


def test_unet_with_unknown_context_width(tmp_path):
    write_json(tmp_path / "m" / "model_index.json", {"_class_name": "IFPipeline"})
    write_json(tmp_path / "m" / "unet" / "config.json", {"cross_attention_dim": 4096})
    with pytest.raises(ModelInfoError, match="IFPipeline"):
        inspect_model(str(tmp_path / "m"))


def test_custom_width_sd_pipeline_falls_back_on_prediction_type(tmp_path):
    for prediction, family in (("epsilon", "sd1"), ("v_prediction", "sd2")):
        folder = sd_diffusers_folder(tmp_path / prediction, prediction_type=prediction)
        write_json(folder / "unet" / "config.json", {"cross_attention_dim": 32, "sample_size": 8})
        assert inspect_model(str(folder)).family == family


@pytest.mark.parametrize("maker,family,context,prediction", [
    (sd1_single_file, "sd1", 768, None),
    (sd2_single_file, "sd2", 1024, "v_prediction"),
    (sdxl_single_file, "sdxl", 2048, None)])
def test_single_file_checkpoints(tmp_path, maker, family, context, prediction):
    info = inspect_model(str(maker(tmp_path / "model file.safetensors")))
    assert (info.format, info.family, info.cross_attention_dim) == ("single_file", family, context)
    assert info.prediction_type == prediction and not info.layers_complete
    assert info.linear_layers["to_q"][0] in (320, 640)
    assert "q_proj" in info.text_encoder_layers


def test_single_file_names_become_diffusers_names(tmp_path):
    info = inspect_model(str(sd1_single_file(tmp_path / "sd15.safetensors")))
    assert info.linear_layers["conv1"] == (320, 320)  # was in_layers.2
    assert "in_layers.2" not in info.linear_layers
    assert info.linear_layers["ff.net.2"] == (1280, 320)
    sdxl = inspect_model(str(sdxl_single_file(tmp_path / "xl.safetensors")))
    assert sdxl.text_encoder_layers["fc1"] == (1280, 5120)  # OpenCLIP mlp.c_fc
    assert sdxl.text_encoder_layers["q_proj"] == (768, 768)  # narrowest of the two encoders


def test_unet_only_single_file_detected_by_context_width(tmp_path):
    path = write_safetensors(tmp_path / "unet.safetensors", {
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": [320, 1024]})
    assert inspect_model(str(path)).family == "sd2"


def test_lora_file_is_not_a_base_model(tmp_path):
    path = write_safetensors(tmp_path / "style.safetensors", {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": [4, 320]})
    with pytest.raises(ModelInfoError, match="is a LoRA, not a base model"):
        inspect_model(str(path))


def test_broken_safetensors_names_the_file(tmp_path):
    path = tmp_path / "half.safetensors"
    path.write_bytes(b"\xff" * 20)
    with pytest.raises(ModelInfoError, match="half.safetensors") as err:
        inspect_model(str(path))
    assert err.value.reason == "malformed" and "download" in err.value.hint


def test_pickle_refused_unless_allowed(tmp_path):
    ckpt = tmp_path / "old.ckpt"
    ckpt.write_bytes(b"not really a pickle")
    with pytest.raises(ModelInfoError) as err:
        inspect_model(str(ckpt))
    assert err.value.reason == "pickle" and "model.allow_pickle" in err.value.hint
    info = inspect_model(str(ckpt), allow_pickle=True)
    assert info.format == "pickle" and info.family is None and "without loading" in info.notes[0]


def test_folder_with_only_pickle_weights(tmp_path):
    folder = llama_folder(tmp_path / "m", weights=False)
    (folder / "pytorch_model.bin").write_bytes(b"x")
    assert inspect_model(str(folder)).pickle_weights


def test_picking_a_file_inside_a_model_folder_means_the_folder(tmp_path):
    folder = llama_folder(tmp_path / "m")
    assert inspect_model(str(folder / "config.json")).path == folder
    assert inspect_model(str(folder / "model-00001-of-00002.safetensors")).path == folder


@pytest.mark.parametrize("setup,needle", [
    (lambda d: (d / "empty").mkdir(), "no config.json or model_index.json"),
    (lambda d: write_json(d / "empty" / "adapter_config.json", {}), "LoRA adapter folder"),
    (lambda d: write_json(d / "empty" / "config.json", {"_class_name": "UNet2DConditionModel"}),
     "only a UNet")])
def test_folders_that_are_not_models(tmp_path, setup, needle):
    setup(tmp_path)
    with pytest.raises(ModelInfoError, match=needle):
        inspect_model(str(tmp_path / "empty"))


def test_gguf_and_unknown_files(tmp_path):
    for name, needle in (("m.gguf", "GGUF"), ("notes.md", "not a model file")):
        (tmp_path / name).write_text("x")
        with pytest.raises(ModelInfoError, match=needle):
            inspect_model(str(tmp_path / name))


def test_empty_and_missing(tmp_path):
    with pytest.raises(ModelInfoError) as err:
        inspect_model("  ")
    assert err.value.reason == "empty"
    with pytest.raises(ModelInfoError) as err:
        inspect_model(str(tmp_path / "nothing here"))
    assert err.value.reason == "missing" and "nothing here" in err.value.message


def _fake_hub_cache(cache, repo_id):
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    return llama_folder(repo / "snapshots" / "abc123")


def test_hub_id_found_in_local_cache_only(tmp_path, monkeypatch):
    import huggingface_hub.constants
    snapshot = _fake_hub_cache(tmp_path / "hub", "someone/tiny-llama")
    assert find_in_hf_cache("someone/tiny-llama", cache_dir=tmp_path / "hub") == snapshot
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    info = inspect_model("someone/tiny-llama")
    assert info.path == snapshot and info.family == "text"
    with pytest.raises(ModelInfoError) as err:
        inspect_model("someone/not-downloaded")
    assert "Hugging Face cache" in err.value.hint and "'hf download " in err.value.hint


def test_relative_paths_try_base_dir_then_cwd(tmp_path, monkeypatch):
    presets = tmp_path / "presets"
    llama_folder(presets / "models" / "m")
    llama_folder(tmp_path / "cwd" / "models" / "m")
    (tmp_path / "cwd" / "only here").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert resolve_local_path("models/m", presets) == presets / "models" / "m"
    assert resolve_local_path('"only here"', presets) == tmp_path / "cwd" / "only here"
    assert resolve_local_path("nowhere", presets) is None
    assert inspect_model("models/m", base_dir=presets).path == presets / "models" / "m"


def test_results_are_cached_until_a_file_changes(tmp_path):
    folder = llama_folder(tmp_path / "m")
    first = inspect_model(str(folder))
    assert inspect_model(str(folder)) is first
    config = json.loads((folder / "config.json").read_text())
    config["max_position_embeddings"] = 4096
    write_json(folder / "config.json", config)
    assert inspect_model(str(folder)).max_position_embeddings == 4096
    assert len(model_info._CACHE) <= model_info._CACHE_SIZE


def test_matching_layers_follows_peft_suffix_rule():
    layers = {"to_q": (1, 1), "to_out.0": (1, 1), "ff.net.0.proj": (1, 1)}
    assert matching_layers("attn1.to_q", layers) == ["to_q"]
    assert matching_layers("proj", layers) == ["ff.net.0.proj"]
    assert matching_layers("to_out.0", layers) == ["to_out.0"]
    assert matching_layers("q_proj", layers) == []
