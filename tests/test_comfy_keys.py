"""Which exported keys ComfyUI's LoRA loader takes. COMFY_KEYS reimplements the key map of
ComfyUI's comfy/lora.py (model_lora_keys_unet, model_lora_keys_clip) and the tensor
names load_lora reads, from its source; everything else it drops with a "lora key not
loaded" warning. The kohya file loads completely; the diffusers file's attention
projections are spelt as diffusers names them (`attn1.to_q`), which ComfyUI maps only as
`attn1.processor.to_q`, so the format says plainly it is for diffusers and points
ComfyUI users to the kohya file."""
import pytest

from lora_studio.cli import main
from lora_studio.config.jobfile import write_job_toml
from lora_studio.engine.image.export import to_diffusers, to_kohya
from lora_studio.engine.image.lora import add_lora, lora_state
from lora_studio.engine.image.model import load_sd
from lora_studio.runs.exports import COMFYUI_NOTE, find_format
from test_sd_engine import TINY_SD, make_job, run_dir, train_sd

# comfy/lora.py's LORA_CLIP_MAP: CLIP module -> its kohya spelling.
LORA_CLIP_MAP = {"mlp.fc1": "mlp_fc1", "mlp.fc2": "mlp_fc2",
                 "self_attn.k_proj": "self_attn_k_proj", "self_attn.q_proj": "self_attn_q_proj",
                 "self_attn.v_proj": "self_attn_v_proj", "self_attn.out_proj": "self_attn_out_proj"}
# load_lora: the tensor names it reads after a mapped module key.
LOAD_SUFFIXES = (".alpha", ".dora_scale", ".lora_up.weight", ".lora_down.weight",
                 ".lora_mid.weight", "_lora.up.weight", "_lora.down.weight", ".lora_B.weight",
                 ".lora_A.weight", ".lora.up.weight", ".lora.down.weight",
                 ".lora_linear_layer.up.weight", ".lora_linear_layer.down.weight",
                 ".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b", ".hada_t1", ".hada_t2",
                 ".lokr_w1", ".lokr_w2", ".lokr_w1_a", ".lokr_w1_b", ".lokr_w2_a", ".lokr_w2_b",
                 ".lokr_t2")


def unet_keys(diffusers_weights) -> set[str]:
    """model_lora_keys_unet over unet_to_diffusers' names (the diffusers UNet's weights)."""
    keys = set()
    for k in diffusers_weights:
        if not k.endswith(".weight"):
            continue
        base = k[:-len(".weight")]
        keys |= {"lora_unet_" + base.replace(".", "_"), "lycoris_" + base.replace(".", "_")}
        for prefix in ("", "unet."):
            key = prefix + base.replace(".to_", ".processor.to_")
            keys.add(key[:-2] if key.endswith(".to_out.0") else key)
    return keys


def clip_keys(layers: int, sdxl: bool) -> set[str]:
    """model_lora_keys_clip for SD 1.x (clip_l) or SDXL (clip_l + clip_g)."""
    keys = set()
    for b in range(layers):
        for c, kohya in LORA_CLIP_MAP.items():
            keys |= {f"lora_te_text_model_encoder_layers_{b}_{kohya}",
                     f"lora_te1_text_model_encoder_layers_{b}_{kohya}",
                     f"text_encoder.text_model.encoder.layers.{b}.{c}"}
            if sdxl:
                keys |= {f"lora_te2_text_model_encoder_layers_{b}_{kohya}",
                         f"text_encoder_2.text_model.encoder.layers.{b}.{c}"}
    return keys


def not_loaded(tensor_names, mapped: set[str]) -> list[str]:
    """The file's tensors load_lora leaves behind: no mapped module + a suffix it reads."""
    return sorted(name for name in tensor_names
                  if not any(name.endswith(s) and name[:-len(s)] in mapped
                             for s in LOAD_SUFFIXES))


@pytest.fixture(scope="module")
def network():
    job = make_job(TINY_SD, network={"algo": "locon", "rank": 4, "alpha": 8.0,
                                     "train_text_encoder": True})
    model = load_sd(job)
    mapped = unet_keys(model.pipe.unet.state_dict()) | \
        clip_keys(model.pipe.text_encoder.config.num_hidden_layers, sdxl=False)
    return job, lora_state(add_lora(model, job)), mapped


def test_comfyui_loads_every_tensor_of_the_kohya_file(network):
    job, tensors, mapped = network
    kohya = to_kohya(tensors, "sd1", job.network)
    assert any(k.startswith("lora_te_") for k in kohya)
    assert any("resnets_0_conv1" in k for k in kohya)
    assert not not_loaded(kohya, mapped)


def test_comfyui_drops_the_diffusers_files_attention_so_the_format_says_so(network):
    job, tensors, mapped = network
    dropped = not_loaded(to_diffusers(tensors, job.network), mapped)
    assert dropped and all(".to_q." in k or ".to_k." in k or ".to_v." in k or ".to_out.0." in k
                           for k in dropped)
    assert "ComfyUI" in find_format("diffusers").explanation
    assert "kohya" in COMFYUI_NOTE and "ComfyUI" in COMFYUI_NOTE


def test_the_cli_says_it_after_a_diffusers_export(tmp_path, capsys):
    job = make_job(TINY_SD, training={"max_steps": 1})
    run = run_dir(tmp_path)
    write_job_toml(job, run.job_toml)
    train_sd(job, run, lambda e: None, lambda: False)
    capsys.readouterr()
    assert main(["export", str(run.root), "--format", "diffusers", "--name", "d"]) == 0
    assert COMFYUI_NOTE in capsys.readouterr().out
    assert main(["export", str(run.root), "--format", "kohya", "--name", "k"]) == 0
    assert COMFYUI_NOTE not in capsys.readouterr().out
