"""The export check per target and the Modelfile text: plain functions, no torch."""
from lora_studio.runs.export_check import check_adapter, describe
from lora_studio.runs.modelfile import (PROMPT_MARK, RESPONSE_MARK, SYSTEM_MARK, Renders,
                                        modelfile_text, ollama_command, ollama_name,
                                        template_from_renders)

LLAMA = ("LlamaForCausalLM",)
PLAIN = {"r": 16, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"],
         "base_model_name_or_path": "meta-llama/Llama-3.2-1B"}


def messages(target, changes=None, architectures=LLAMA):
    return [f.message for f in check_adapter(target, {**PLAIN, **(changes or {})}, architectures)]


def test_a_plain_adapter_passes_every_target():
    for target in ("llama.cpp", "ollama", "vllm", "merged"):
        assert check_adapter(target, PLAIN, LLAMA) == []


def test_each_incompatibility_is_named_for_the_targets_that_cannot_take_it():
    assert any("DoRA" in m for m in messages("llama.cpp", {"use_dora": True}))
    assert any("DoRA" in m for m in messages("vllm", {"use_dora": True}))
    assert messages("merged", {"use_dora": True, "modules_to_save": ["lm_head"]}) == []
    assert any("modules_to_save: embed_tokens" in m
               for m in messages("ollama", {"modules_to_save": ["embed_tokens"]}))
    assert any("embedding or output layer (lm_head)" in m
               for m in messages("vllm", {"target_modules": ["q_proj", "lm_head"]}))
    assert any("rank 32" in m for m in messages("vllm", {"r": 32}))
    assert messages("llama.cpp", {"r": 32}) == []   # llama.cpp has no rank limit
    assert any("GPTNeoXForCausalLM" in m for m in messages("llama.cpp", architectures=("GPTNeoXForCausalLM",)))
    assert any(r"C:\models\llama" in m for m in messages(
        "vllm", {"base_model_name_or_path": r"C:\models\llama"}))
    assert messages("vllm", {"base_model_name_or_path": "meta-llama/Llama-3.2-1B"}) == []


def test_the_vllm_rank_fix_names_the_flag_and_does_not_block():
    found = check_adapter("vllm", {**PLAIN, "r": 48}, LLAMA)
    assert [f.blocking for f in found] == [False]
    assert "--max-lora-rank 64" in found[0].fix
    text = describe(found)
    assert text.startswith("Note (vLLM): ") and "\n  fix: " in text


def test_dora_blocks_llama_cpp_with_the_merged_export_as_fix():
    [found] = check_adapter("llama.cpp", {**PLAIN, "use_dora": True}, LLAMA)
    assert found.blocking and "merged" in found.fix and "use_dora = false" in found.fix


def chatml(with_system=True):
    def turn(role, content):
        return f"<|im_start|>{role}\n{content}<|im_end|>\n"
    return Renders(
        with_system=turn("system", SYSTEM_MARK) + turn("user", PROMPT_MARK)
        + "<|im_start|>assistant\n" if with_system else None,
        without_system=turn("user", PROMPT_MARK) + "<|im_start|>assistant\n",
        answered=turn("user", PROMPT_MARK) + turn("assistant", RESPONSE_MARK))


def test_a_chatml_template_becomes_an_ollama_template_with_its_end_token():
    template, stops = template_from_renders(chatml(), None)
    assert template == ("{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
                        "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n"
                        "{{ .Response }}<|im_end|>\n")
    assert stops == ["<|im_end|>"]
    no_system, _ = template_from_renders(chatml(with_system=False), None)
    assert "System" not in no_system and no_system.startswith("<|im_start|>user\n{{ .Prompt }}")


def test_modelfile_lines_and_the_ollama_command():
    text = modelfile_text("/models/my base", "./a-lora.gguf", "{{ .Prompt }}",
                          ["<|im_end|>", "</s>", "<|im_end|>"], "Be brief.")
    assert text.splitlines() == ['FROM "/models/my base"', "ADAPTER ./a-lora.gguf",
                                 "PARAMETER stop <|im_end|>", "PARAMETER stop </s>",
                                 'TEMPLATE """{{ .Prompt }}"""', 'SYSTEM """Be brief."""']
    assert ollama_name("My LoRA v2!") == "my-lora-v2"
    assert ollama_command("x", "/a b/Modelfile") == 'ollama create x -f "/a b/Modelfile"'
