"""LoCon, LoHa and LoKr on the tiny Stable Diffusion pipeline: they train, their kohya
files patch a UNet through a ComfyUI-style reference loader (tests/lycoris_reference.py)
to what the trained network computes, and the diffusers files load where diffusers can."""
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lora_studio.engine.core.control import EngineError
from lora_studio.engine.image.export import export, to_diffusers, to_kohya
from lora_studio.engine.image.lora import add_lora, load_lora_state, lora_state
from lora_studio.engine.image.model import load_sd
from lycoris_reference import apply_kohya
from test_sd_engine import TINY_SD, make_job, run_dir, train_sd

# rank / alpha differ from conv rank / alpha so a mixed-up scale shows; LoKr's rank 4 keeps
# the attention factors full matrices and conv rank 1 decomposes the conv ones.
NETWORKS = {
    "locon": {"algo": "locon", "rank": 4, "alpha": 8.0, "conv_rank": 2, "conv_alpha": 1.0},
    "loha": {"algo": "loha", "rank": 4, "alpha": 8.0, "conv_rank": 2, "conv_alpha": 1.0},
    "lokr": {"algo": "lokr", "rank": 4, "alpha": 2.0, "conv_rank": 1, "conv_alpha": 3.0},
}
KOHYA_SUFFIXES = {"locon": {"lora_down.weight", "lora_up.weight", "alpha"},
                  "loha": {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha"},
                  "lokr": {"lokr_w1", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "alpha"}}


def unet_out(unet) -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    sample = torch.randn(1, 4, 16, 16, generator=generator)
    text = torch.randn(1, 7, unet.config.cross_attention_dim, generator=generator)
    with torch.no_grad():
        return unet(sample, torch.tensor([500]), encoder_hidden_states=text).sample


def randomised(job) -> dict[str, torch.Tensor]:
    """The network's tensors set to random values, so every factor matters."""
    torch.manual_seed(0)
    adapted = add_lora(load_sd(job), job)
    with torch.no_grad():
        for p in adapted["unet"].parameters():
            if p.requires_grad:
                p.normal_(0, 0.3)
    return lora_state(adapted)


def trained_unet(job, tensors):
    model = load_sd(job)
    load_lora_state(add_lora(model, job), tensors)
    return model.pipe.unet


def assert_reproduces(job, tensors, kohya):
    """The reference loader patches the base UNet to what the network computes."""
    want = unet_out(trained_unet(job, tensors))
    base = load_sd(job).pipe.unet
    before = unet_out(base)
    patched = apply_kohya(base, kohya)
    got = unet_out(base)
    assert any(m.endswith("resnets.0.conv1") for m in patched)
    assert any(m.endswith("attn1.to_q") for m in patched)
    assert (want - before).abs().max() > 1e-3          # the network changes the output...
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)  # ...as the file says


@pytest.mark.parametrize("algo", list(NETWORKS))
def test_kohya_file_reproduces_the_network(algo):
    job = make_job(TINY_SD, network=NETWORKS[algo])
    tensors = randomised(job)
    kohya = to_kohya(tensors, "sd1", job.network)
    assert {k.partition(".")[2] for k in kohya} == KOHYA_SUFFIXES[algo]
    assert all(k.startswith("lora_unet_") for k in kohya)
    assert_reproduces(job, tensors, kohya)


def test_conv_layers_take_the_conv_rank_and_alpha():
    job = make_job(TINY_SD, network=NETWORKS["loha"])
    kohya = to_kohya(randomised(job), "sd1", job.network)
    conv = "lora_unet_down_blocks_0_resnets_0_conv1"
    linear = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    shortcut = "lora_unet_up_blocks_0_resnets_0_conv_shortcut"
    assert kohya[f"{conv}.hada_w1_b"].shape == (2, 16 * 3 * 3) and float(kohya[f"{conv}.alpha"]) == 1.0
    assert kohya[f"{linear}.hada_w1_b"].shape == (4, 16) and float(kohya[f"{linear}.alpha"]) == 8.0
    assert kohya[f"{shortcut}.hada_w1_b"].shape[0] == 4 and float(kohya[f"{shortcut}.alpha"]) == 8.0


def test_plain_lora_leaves_the_convs_alone():
    job = make_job(TINY_SD, network={"rank": 4, "alpha": 8.0, "conv_rank": 2})
    kohya = to_kohya(randomised(job), "sd1", job.network)
    assert not [k for k in kohya if "resnets" in k or "samplers" in k]
    assert {k.partition(".")[2] for k in kohya} == {"lora_down.weight", "lora_up.weight", "alpha"}


@pytest.fixture(scope="module", params=list(NETWORKS))
def trained(request, tmp_path_factory):
    algo = request.param
    job = make_job(TINY_SD, network={**NETWORKS[algo], "train_text_encoder": True},
                   training={"max_steps": 3, "batch_size": 2}, optimizer={"learning_rate": 3e-2})
    events = []
    run = run_dir(tmp_path_factory.mktemp(f"{algo} run"))
    result = train_sd(job, run, events.append, lambda: False)
    assert events[-1]["type"] == "finished" and events[-1]["status"] == "completed", events[-3:]
    return algo, job, run, result, events


def test_trained_network_exports_a_kohya_file_that_loads_as_trained(trained):
    algo, job, run, result, events = trained
    kohya_file = next(e.path for e in result.exports if e.format == "kohya")
    kohya = load_file(kohya_file)
    assert {k.partition(".")[2] for k in kohya} <= KOHYA_SUFFIXES[algo]
    assert [k for k in kohya if k.startswith("lora_te_text_model_encoder_layers_0_self_attn_q_proj.")]
    with safe_open(kohya_file, "pt") as fh:
        meta = fh.metadata()
    args = json.loads(meta["ss_network_args"])
    assert args["conv_dim"] == str(NETWORKS[algo]["conv_rank"])
    assert float(args["conv_alpha"]) == NETWORKS[algo]["conv_alpha"]
    assert meta["ss_network_module"] == ("networks.lora" if algo == "locon" else "lycoris.kohya")
    assert args.get("algo") == (None if algo == "locon" else algo)
    final = load_file(run.final / "adapter.safetensors")
    assert_reproduces(job, final, kohya)


def test_diffusers_loads_locon_and_the_others_say_why_not(trained):
    algo, job, run, result, events = trained
    formats = sorted(e.format for e in result.exports)
    logs = " ".join(e.get("message", "") for e in events if e["type"] == "log")
    if algo != "locon":
        name = {"loha": "LoHa", "lokr": "LoKr"}[algo]
        assert formats == ["kohya"]
        assert "No diffusers export" in logs and f"not {name}" in logs
        files = sorted(run.exports.rglob("*"))
        with pytest.raises(EngineError, match=f"not {name}"):
            export(run, job, "diffusers")
        assert sorted(run.exports.rglob("*")) == files  # nothing written, nothing left over
        return
    assert formats == ["diffusers", "kohya"] and "No diffusers export" not in logs
    folder = next(e.path for e in result.exports if e.format == "diffusers").parent
    final = load_file(run.final / "adapter.safetensors")
    want = unet_out(trained_unet(job, {k: v for k, v in final.items() if k.startswith("unet.")}))
    pipe = load_sd(job).pipe
    before = unet_out(pipe.unet)
    pipe.load_lora_weights(str(folder))
    got = unet_out(pipe.unet)
    assert (want - before).abs().max() > 1e-3
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("algo", ["loha", "lokr"])
def test_loha_and_lokr_have_no_diffusers_conversion(algo):
    job = make_job(TINY_SD, network=NETWORKS[algo])
    with pytest.raises(EngineError, match="load LoRA and LoCon files"):
        to_diffusers({}, job.network)


def test_the_playground_draws_a_locon_run_as_trained_and_says_why_not_for_the_others(trained):
    from lora_studio.playground.errors import PlaygroundError
    from lora_studio.playground.image import ImageBackend
    from lora_studio.runs.adapter_sources import adapter_source
    from lora_studio.config.jobfile import write_job_toml
    algo, job, run, result, events = trained
    write_job_toml(job, run.job_toml)  # as the window's runs have it
    backend = ImageBackend(str(TINY_SD))
    if algo != "locon":
        with pytest.raises(PlaygroundError, match="not LoHa|not LoKr"):
            backend.load_adapter("run", adapter_source(run.root))
        assert not backend.peft_names
        return
    final = load_file(run.final / "adapter.safetensors")
    want = unet_out(trained_unet(job, final))
    backend.load_adapter("run", adapter_source(run.root))
    backend.set_active(["run"], [1.0])
    torch.testing.assert_close(unet_out(backend.pipe.unet), want, rtol=1e-4, atol=1e-5)
