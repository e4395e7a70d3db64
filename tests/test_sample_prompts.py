"""kohya's per-prompt sample options, read without torch."""
import pytest

from lora_studio.config.sample_prompts import SamplePrompt, parse_sample_prompt
from lora_studio.config.samplers import SAMPLERS, sampler_name


def test_every_kohya_option_is_read():
    got = parse_sample_prompt("a red circle, white background --n blurry, text, low quality "
                              "--w 768 --h 512 --s 28 --l 7.5 --d 1234 --ss euler_a")
    assert got == SamplePrompt("a red circle, white background", negative="blurry, text, low quality",
                               width=768, height=512, steps=28, cfg=7.5, seed=1234, sampler="Euler a")


def test_a_plain_prompt_has_no_options():
    assert parse_sample_prompt("  a cat on a mat  ") == SamplePrompt("a cat on a mat")


@pytest.mark.parametrize("line,problem", [
    ("a cat --x 3", "--x 3: unknown option"),
    ("a cat --w big", "--w big: not a valid value"),
    ("a cat --s", "--s has no value"),
    ("a cat --w 32", "outside 64-4096"),
    ("a cat --s 0", "steps 0 is outside 1-1000"),
    ("a cat --ss pndm", "sampler 'pndm' is not one of Euler a"),
    ("a cat --l 500", "CFG scale of 500 is outside"),
])
def test_an_option_that_cannot_be_read_is_named_and_left_out(line, problem):
    got = parse_sample_prompt(line)
    assert got.prompt == "a cat"
    assert len(got.problems) == 1 and problem in got.problems[0], got.problems
    assert (got.width, got.steps, got.sampler, got.cfg) == (None, None, None, None)


def test_a_side_off_the_grid_is_rounded_down_as_kohya_does_and_said():
    got = parse_sample_prompt("a cat --w 500 --H 520")
    assert (got.width, got.height) == (496, 520)   # option letters in any case
    assert got.problems == ["--w 500: 500 is not a multiple of 8; 496 is used"]


@pytest.mark.parametrize("name,expected", [
    ("euler_a", "Euler a"), ("k_euler", "Euler"), ("dpmsolver++", "DPM++ 2M"), ("DDIM", "DDIM"),
    ("dpm++ 2m karras", "DPM++ 2M Karras"), ("Euler a", "Euler a"), ("lms", None),
])
def test_sampler_names_of_kohya_and_a1111(name, expected):
    assert sampler_name(name) == expected
    assert expected is None or expected in SAMPLERS


def test_the_playground_reads_the_same_sampler_table():
    from lora_studio.runs.xy_grid import SAMPLERS as playground
    assert playground is SAMPLERS
