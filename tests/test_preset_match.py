from pathlib import Path

from lora_studio.config.preset_match import kind_of_family, matching_preset, vram_gb
from lora_studio.config.presets import PresetInfo, PresetMeta


def _info(name, family, vram, origin="built-in"):
    return PresetInfo(Path(f"{name}.toml"), origin, PresetMeta(name=name, model_family=family,
                                                               vram_class=vram))


PRESETS = [_info("text-cpu", "text", "CPU"), _info("text-8", "text", "8GB"),
           _info("sd15-8", "sd1", "8GB"), _info("sdxl-12", "sdxl", "12GB"),
           _info("mine", "text", "12GB", origin="user")]


def test_offers_a_builtin_of_the_datasets_kind_for_the_vram_class():
    assert matching_preset("image", "text", "8GB", PRESETS).meta.name == "sd15-8"      # same class
    assert matching_preset("text", "image", "12GB", PRESETS).meta.name == "text-8"     # not 'mine'
    assert matching_preset("image", "text", "24GB", PRESETS).meta.name == "sdxl-12"    # largest below
    assert matching_preset("image", "text", "CPU", PRESETS).meta.name == "sd15-8"      # smallest
    assert matching_preset("text", "text", "8GB", PRESETS) is None                      # fits already
    assert matching_preset("text", "unknown", "8GB", PRESETS) is None                   # family auto
    assert matching_preset("image", "text", "8GB", PRESETS[:2]) is None                 # none of that kind


def test_kinds_and_classes():
    assert [kind_of_family(f) for f in ("text", "sdxl", "auto", None)] == [
        "text", "image", "unknown", "unknown"]
    assert (vram_gb("12GB"), vram_gb("6.5 gb"), vram_gb("CPU")) == (12.0, 6.5, 0.0)
