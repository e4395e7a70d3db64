"""The image playground on the tiny SD model: LoRAs from LoRA Studio's own format and
from a kohya file, strengths set with diffusers' adapter API, XY grids with A1111's
parameters chunk."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lora_studio.runs.playground_protocol import request
from lora_studio.runs.xy_grid import a1111_parameters, adapters_by_strengths, prompts_by_seeds

ROOT = Path(__file__).resolve().parents[1]
SD = ROOT / "resources" / "tiny-sd"
SETTINGS = {"prompt": "a red plum", "negative_prompt": "blurry", "steps": 3, "cfg": 5.0,
            "sampler": "Euler", "seed": 4}


class Events(list):
    def __call__(self, ev):
        self.append(ev)

    def of(self, kind):
        return [e for e in self if e["type"] == kind]


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    """One LoRA in LoRA Studio's format (PEFT names per component, alpha in the header)
    and the same LoRA as a kohya file."""
    from safetensors.torch import save_file
    from lora_studio.config.parse import parse_job
    from lora_studio.engine.image.export import to_kohya
    from lora_studio.engine.image.lora import add_lora, lora_state
    from lora_studio.engine.image.model import load_sd
    root = tmp_path_factory.mktemp("loras")
    job, _ = parse_job({"model": {"path": str(SD)}, "network": {"rank": 4, "alpha": 8.0}})
    torch.manual_seed(0)
    adapted = add_lora(load_sd(job), job)
    with torch.no_grad():
        for name, p in adapted["unet"].named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    tensors = lora_state(adapted)
    own = root / "own"
    own.mkdir()
    save_file(tensors, str(own / "adapter.safetensors"), {"lora_studio.alpha": "8"})
    kohya = root / "plum kohya.safetensors"
    save_file(to_kohya(tensors, "sd1", job.network), str(kohya))
    return {"own": own, "kohya": kohya}


@pytest.fixture(scope="module")
def server(loras):
    from lora_studio.playground.server import Server
    events = Events()
    srv = Server(events)
    srv.handle(1, request("load_base", kind="image", path=str(SD)))
    srv.handle(2, request("load_adapter", name="own", path=str(loras["own"])))
    srv.handle(3, request("load_adapter", name="kohya", path=str(loras["kohya"])))
    assert not events.of("error"), events.of("error")
    assert [e["source"] for e in events.of("adapter_loaded")] == ["checkpoint", "file"]
    return srv, events


def draw(srv, events, tmp_path, name, **fields) -> np.ndarray:
    events.clear()
    srv.handle(10, request("generate", out=str(tmp_path / f"{name}.png"), **{**SETTINGS, **fields}))
    assert not events.of("error"), events.of("error")
    return np.asarray(Image.open(events.of("image")[-1]["path"]).convert("RGB"))


def test_a_lora_changes_the_image_and_both_formats_draw_the_same(server, tmp_path):
    srv, events = server
    base = draw(srv, events, tmp_path, "base", adapters=[])
    own = draw(srv, events, tmp_path, "own", adapters=["own"], weights=[1.0])
    kohya = draw(srv, events, tmp_path, "kohya", adapters=["kohya"], weights=[1.0])
    zero = draw(srv, events, tmp_path, "zero", adapters=["own"], weights=[0.0])
    assert np.abs(base.astype(int) - own).max() > 10
    assert np.abs(own.astype(int) - kohya).max() <= 1
    assert np.array_equal(zero, base)
    assert srv.loads == 1 and srv.backend.pipe.unet is srv.backend.base


def test_the_playground_draws_what_diffusers_draws_with_the_kohya_file(server, loras, tmp_path):
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    srv, events = server
    mine = draw(srv, events, tmp_path, "mine", adapters=["kohya"], weights=[0.7])
    pipe = StableDiffusionPipeline.from_pretrained(str(SD), local_files_only=True)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(loras["kohya"]), adapter_name="k")
    pipe.set_adapters(["k"], [0.7])
    theirs = np.asarray(pipe(SETTINGS["prompt"], negative_prompt=SETTINGS["negative_prompt"],
                             num_inference_steps=3, guidance_scale=5.0,
                             generator=torch.Generator("cpu").manual_seed(4)).images[0])
    assert np.abs(mine.astype(int) - theirs).max() <= 1


def test_the_png_carries_a1111_parameters(server, tmp_path):
    srv, events = server
    draw(srv, events, tmp_path, "p", adapters=["own"], weights=[0.5])
    text = Image.open(events.of("image")[-1]["path"]).text["parameters"]
    assert text.splitlines()[0] == "a red plum <lora:own:0.5>"
    assert text.splitlines()[1] == "Negative prompt: blurry"
    assert "Steps: 3, Sampler: Euler, CFG scale: 5.0, Seed: 4, Size: 64x64" in text


def test_every_sampler_draws(server, tmp_path):
    from lora_studio.runs.xy_grid import SAMPLERS
    srv, events = server
    for sampler in SAMPLERS:
        assert draw(srv, events, tmp_path, "s", sampler=sampler).shape == (64, 64, 3)


def test_an_xy_grid_of_adapters_by_strengths_has_the_base_at_strength_zero(server, tmp_path):
    srv, events = server
    base = draw(srv, events, tmp_path, "gbase", adapters=[])
    grid = adapters_by_strengths(["own", "kohya"], [0.0, 1.0])
    events.clear()
    srv.handle(20, request("grid", out=str(tmp_path / "grid.png"), cells=grid.cells,
                           col_labels=grid.col_labels, row_labels=grid.row_labels, **SETTINGS))
    assert not events.of("error"), events.of("error")
    assert [e["done"] for e in events.of("cell")] == [1, 2, 3, 4]
    shown = Image.open(events.of("image")[-1]["path"])
    assert "XY grid: 2 rows (own, kohya) x 2 columns (base (0), strength 1)" in shown.text["parameters"]
    pixels = np.asarray(shown.convert("RGB"))
    left, top = shown.width - 2 * 64, shown.height - 2 * 64
    for row in range(2):
        y = top + row * 64
        assert np.array_equal(pixels[y:y + 64, left:left + 64], base)
        assert not np.array_equal(pixels[y:y + 64, left + 64:left + 128], base)


def test_a_lora_for_another_model_is_an_error_event(server, tmp_path):
    from safetensors.torch import save_file
    save_file({"lora_unet_nope_block.lora_down.weight": torch.ones(4, 8),
               "lora_unet_nope_block.lora_up.weight": torch.ones(8, 4)}, str(tmp_path / "x.safetensors"))
    srv, events = server
    events.clear()
    srv.handle(30, request("load_adapter", name="x", path=str(tmp_path / "x.safetensors")))
    (err,) = events.of("error")
    assert "x.safetensors" in err["message"] and err["hint"]
    assert "x" not in srv.backend.adapters
    draw(srv, events, tmp_path, "after", adapters=["own"])


def test_grid_layouts():
    grid = prompts_by_seeds(["a", "b", "c"], [1, 2])
    assert grid.count == 6 and grid.row_labels == ["a", "b", "c"]
    assert grid.cells[2][1] == {"prompt": "c", "seed": 2}
    assert a1111_parameters({"prompt": "p", "steps": 2, "width": 8, "height": 8}) == \
        "p\nSteps: 2, Size: 8x8"
