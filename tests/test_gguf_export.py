"""GGUF exports (adapter, merged f16 / q8_0), the Ollama Modelfile and the export check on
the tiny Llama in resources/, read back with gguf's own reader."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from lora_studio.cli import main  # noqa: E402
from lora_studio.config.jobfile import write_job_toml  # noqa: E402
from lora_studio.config.parse import parse_job  # noqa: E402
from lora_studio.engine.text.export import ADAPTER_CONFIG, write_peft_adapter  # noqa: E402
from lora_studio.runs.layout import new_run_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "resources" / "tiny-text-model"
HEADS, KV_HEADS, HEAD_DIM, LAYERS = 4, 2, 16, 2
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GGUF_NAMES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
              "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}


def llama_cpp_permute(rows: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's Q/K row order written out by hand: in each head, row 2i+j of the
    output is row j*(head_dim/2)+i of the input (the two rotary halves interleaved)."""
    head_dim = rows.shape[0] // heads
    out = np.empty_like(rows)
    for h in range(heads):
        for i in range(head_dim // 2):
            for j in range(2):
                out[h * head_dim + 2 * i + j] = rows[h * head_dim + j * (head_dim // 2) + i]
    return out


def unpermute(rows: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's Q/K row order undone: back to transformers' (rotary halves apart)."""
    return (rows.reshape(heads, rows.shape[0] // heads // 2, 2, *rows.shape[1:])
            .swapaxes(1, 2).reshape(rows.shape))


@pytest.fixture(scope="module")
def lora(tmp_path_factory):
    """A finished run of the tiny Llama whose adapter has nonzero B on every projection,
    and the PEFT model it came from."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(MODEL)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.2)
    data = tmp_path_factory.mktemp("data") / "pirate.jsonl"
    data.write_text("".join(json.dumps({"system": "Be a pirate.", "prompt": q, "response": "Arr."})
                            + "\n" for q in ("Hi?", "Where?")), encoding="utf-8")
    job, _ = parse_job({"model": {"path": str(MODEL), "family": "text"},
                        "dataset": {"path": str(data)}, "output": {"output_name": "tiny chat"}})
    run = new_run_dir(tmp_path_factory.mktemp("runs"), "gguf")
    write_job_toml(job, run.job_toml)
    write_peft_adapter(model, run.final, {}, str(MODEL))
    return run, model.eval()


def fields(reader) -> dict:
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}


def tensors(reader) -> dict:
    return {t.name: t for t in reader.tensors}


def peft_pair(model, layer: int, module: str) -> tuple[np.ndarray, np.ndarray]:
    part = "self_attn" if module in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
    lin = getattr(getattr(model.base_model.model.model.layers[layer], part), module)
    return (lin.lora_A["default"].weight.detach().numpy(),
            lin.lora_B["default"].weight.detach().numpy())


def test_adapter_gguf_has_llama_cpp_layout_names_and_permuted_b(lora, capsys):
    run, model = lora
    assert main(["export", str(run.root), "--format", "gguf-adapter"]) == 0
    folder = run.exports / "tiny chat-gguf"
    reader = gguf.GGUFReader(folder / "tiny chat-lora.gguf")
    meta = fields(reader)
    assert meta["general.type"] == "adapter" and meta["adapter.type"] == "lora"
    assert meta["adapter.lora.alpha"] == 8.0 and meta["general.architecture"] == "llama"
    assert meta["llama.attention.head_count"] == HEADS
    assert meta["llama.attention.head_count_kv"] == KV_HEADS
    found = tensors(reader)
    assert set(found) == {f"blk.{i}.{GGUF_NAMES[m]}.weight.lora_{ab}"
                          for i in range(LAYERS) for m in TARGETS for ab in "ab"}
    for layer in range(LAYERS):
        for module in TARGETS:
            a, b = peft_pair(model, layer, module)
            name = f"blk.{layer}.{GGUF_NAMES[module]}.weight"
            got_a, got_b = np.asarray(found[name + ".lora_a"].data), np.asarray(found[name + ".lora_b"].data)
            assert got_a.shape == a.shape and got_b.shape == b.shape   # A (r, in), B (out, r)
            np.testing.assert_array_equal(got_a, a)
            heads = {"q_proj": HEADS, "k_proj": KV_HEADS}.get(module)
            if heads is None:
                np.testing.assert_array_equal(got_b, b)
            else:
                assert not np.array_equal(got_b, b)
                np.testing.assert_array_equal(got_b, llama_cpp_permute(b, heads))
                np.testing.assert_array_equal(unpermute(got_b, heads), b)
    out = capsys.readouterr().out
    modelfile = folder / "Modelfile"
    assert f'Ollama: ollama create tiny-chat -f "{modelfile}"' in out  # the path has a space
    text = modelfile.read_text(encoding="utf-8")
    assert text.splitlines()[:2] == [f"FROM {MODEL}", 'ADAPTER "./tiny chat-lora.gguf"']


def test_merged_gguf_f16_holds_the_merged_weights_tokenizer_and_template(lora):
    from transformers import AutoTokenizer
    run, model = lora
    assert main(["export", str(run.root), "--format", "gguf-f16"]) == 0
    folder = run.exports / "tiny chat-f16-gguf"
    reader = gguf.GGUFReader(folder / "tiny chat-f16.gguf")
    merged = {k: v.detach().numpy() for k, v in _merged_state(model).items()}
    found = tensors(reader)
    assert "output.weight" not in found   # tied embeddings: llama.cpp reuses token_embd
    for layer in range(LAYERS):
        for module in TARGETS:
            part = "self_attn" if module in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            want = merged[f"model.layers.{layer}.{part}.{module}.weight"]
            heads = {"q_proj": HEADS, "k_proj": KV_HEADS}.get(module)
            if heads:
                want = llama_cpp_permute(want, heads)
            got = found[f"blk.{layer}.{GGUF_NAMES[module]}.weight"]
            assert got.tensor_type == gguf.GGMLQuantizationType.F16
            np.testing.assert_allclose(np.asarray(got.data, dtype=np.float32), want,
                                       rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(found["blk.0.attn_norm.weight"].data),
                                  merged["model.layers.0.input_layernorm.weight"])
    meta = fields(reader)
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "gpt-2"
    assert meta["tokenizer.ggml.tokens"] == tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    assert meta["tokenizer.ggml.merges"]
    assert (meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"],
            meta["tokenizer.ggml.padding_token_id"]) == (0, 1, 2)
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    assert meta["tokenizer.ggml.token_type"][end] == gguf.TokenType.CONTROL
    assert meta["tokenizer.chat_template"] == tokenizer.chat_template
    # the template starts with <s>; llama.cpp adds it (the Ollama template leaves it out)
    assert meta["tokenizer.ggml.add_bos_token"] is True
    assert meta["general.file_type"] == gguf.LlamaFileType.MOSTLY_F16


def test_merged_gguf_q8_0_dequantises_close_to_the_merged_weights(lora):
    from gguf.quants import dequantize
    run, model = lora
    assert main(["export", str(run.root), "--format", "gguf-q8_0"]) == 0
    reader = gguf.GGUFReader(run.exports / "tiny chat-q8_0-gguf" / "tiny chat-q8_0.gguf")
    found = tensors(reader)
    merged = {k: v.detach().numpy() for k, v in _merged_state(model).items()}
    got = found["blk.1.ffn_down.weight"]
    assert got.tensor_type == gguf.GGMLQuantizationType.Q8_0
    want = merged["model.layers.1.mlp.down_proj.weight"]
    back = dequantize(np.asarray(got.data), gguf.GGMLQuantizationType.Q8_0).reshape(want.shape)
    # one int8 step per block of 32 is absmax / 127; rounding is within half of it, and
    # the step itself is stored as f16 (relative error 2^-11, times up to 127 steps)
    step = np.abs(want.reshape(-1, 32)).max(axis=1, keepdims=True) / 127
    assert (np.abs(back - want).reshape(-1, 32) <= step * (0.5 + 127 * 2 ** -11)).all()
    assert not np.array_equal(back, want)
    q = found["blk.0.attn_q.weight"]
    back_q = dequantize(np.asarray(q.data), gguf.GGMLQuantizationType.Q8_0)
    np.testing.assert_allclose(back_q.reshape(-1, 64),
                               llama_cpp_permute(merged["model.layers.0.self_attn.q_proj.weight"],
                                                 HEADS), atol=0.02)


def _merged_state(model) -> dict:
    """The merged weights without touching the fixture's model."""
    import copy
    return copy.deepcopy(model).merge_and_unload().state_dict()


def test_modelfile_stops_at_the_templates_end_token_and_wraps_the_system_prompt(lora):
    run, _ = lora
    assert main(["export", str(run.root), "--format", "gguf-q8_0", "--name", "chat"]) == 0
    text = (run.exports / "chat" / "Modelfile").read_text(encoding="utf-8")
    assert text.splitlines()[0] == "FROM ./chat-q8_0.gguf"
    assert "PARAMETER stop <|end|>" in text.splitlines()
    assert text.count("PARAMETER stop") == 1   # the template's end token is also the EOS
    assert ('TEMPLATE """{{ if .System }}<|system|>\n{{ .System }}<|end|>\n{{ end }}<|user|>\n'
            '{{ .Prompt }}<|end|>\n<|assistant|>\n{{ .Response }}<|end|>\n"""') in text
    assert "ADAPTER" not in text
    assert text.splitlines()[-1] == 'SYSTEM """Be a pirate."""'   # every record's system prompt


def test_no_system_line_when_the_records_differ_or_cannot_be_read(tmp_path):
    from lora_studio.engine.text.gguf_folder import training_system_prompt
    mixed, differ = tmp_path / "mixed.jsonl", tmp_path / "differ.jsonl"
    mixed.write_text(json.dumps({"system": "Be a pirate.", "prompt": "a", "response": "b"}) + "\n"
                     + json.dumps({"prompt": "c", "response": "d"}) + "\n", encoding="utf-8")
    differ.write_text("".join(json.dumps({"system": s, "prompt": "a", "response": "b"}) + "\n"
                              for s in ("Be a pirate.", "Be a cat.")), encoding="utf-8")
    for path in (mixed, differ, tmp_path / "gone.jsonl"):
        job, _ = parse_job({"model": {"path": str(MODEL), "family": "text"},
                            "dataset": {"path": str(path)}})
        assert training_system_prompt(job) is None


# --- the export check ----------------------------------------------------------------------

def set_adapter_config(run, **changes):
    path = run.final / ADAPTER_CONFIG
    original = path.read_text(encoding="utf-8")
    path.write_text(json.dumps({**json.loads(original), **changes}), encoding="utf-8")
    return original


@pytest.mark.parametrize("changes, target, says", [
    ({"use_dora": True}, "llama.cpp", "cannot load DoRA adapters"),
    ({"modules_to_save": ["lm_head"]}, "ollama", "modules_to_save: lm_head"),
    ({"target_modules": ["q_proj", "embed_tokens"]}, "llama.cpp", "embedding or output layer"),
])
def test_a_target_that_cannot_load_the_adapter_writes_nothing(lora, capsys, changes, target, says):
    run, _ = lora
    original = set_adapter_config(run, **changes)
    before = sorted(p.name for p in run.exports.iterdir()) if run.exports.exists() else []
    try:
        assert main(["export", str(run.root), "--target", target, "--name", "refused"]) == 1
    finally:
        (run.final / ADAPTER_CONFIG).write_text(original, encoding="utf-8")
    err = capsys.readouterr().err
    assert says in err and "fix:" in err and "Nothing was written" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in run.exports.iterdir()) == before


def test_vllm_target_notes_rank_and_local_base_path_and_still_exports(lora, capsys):
    run, _ = lora
    original = set_adapter_config(run, r=32)
    try:
        assert main(["export", str(run.root), "--target", "vllm", "--name", "for vllm"]) == 0
    finally:
        (run.final / ADAPTER_CONFIG).write_text(original, encoding="utf-8")
    err = capsys.readouterr().err
    assert "rank 32" in err and "--max-lora-rank 32" in err
    assert f"({MODEL})" in err and "--model" in err   # written with the absolute local path
    assert (run.exports / "for vllm" / ADAPTER_CONFIG).exists()


# --- llama.cpp itself, where llama-cpp-python is installed ---------------------------------

def test_llama_cpp_continues_like_peft(lora, tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lora_studio.engine.text.gguf_export import write_merged_gguf
    run, model = lora
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    config = json.loads((MODEL / "config.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(MODEL)
    write_merged_gguf(tmp_path / "base.gguf", base.state_dict(), config, MODEL, "f16", "base")
    assert main(["export", str(run.root), "--format", "gguf-adapter", "--name", "cpp"]) == 0
    assert main(["export", str(run.root), "--format", "gguf-f16", "--name", "cpp-merged"]) == 0
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What colour is a plum?"}],
                                           tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        want = model.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1]:].tolist()
    for kwargs in ({"model_path": str(run.exports / "cpp-merged" / "cpp-merged-f16.gguf")},
                   {"model_path": str(tmp_path / "base.gguf"),
                    "lora_path": str(run.exports / "cpp" / "cpp-lora.gguf")}):
        llm = llama_cpp.Llama(**kwargs, n_ctx=128, verbose=False)
        tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        assert tokens == ids[0].tolist()
        got = []
        for token in llm.generate(tokens, temp=0.0, top_k=1):
            got.append(token)
            if len(got) == len(want) or token == tokenizer.eos_token_id:
                break
        assert got == want[:len(got)] and len(got) > 0


# --- the other architectures, built tiny from their configs --------------------------------

SMALL = dict(hidden_size=64, intermediate_size=128, num_attention_heads=HEADS,
             num_key_value_heads=KV_HEADS, num_hidden_layers=1, vocab_size=384,
             max_position_embeddings=256, head_dim=HEAD_DIM)


@pytest.mark.parametrize("kind, arch, permuted, extra", [
    ("Mistral", "llama", True, {"output.weight"}),
    ("Qwen2", "qwen2", False, {"output.weight", "blk.0.attn_q.bias", "blk.0.attn_k.bias",
                               "blk.0.attn_v.bias"}),
    ("Qwen3", "qwen3", False, {"output.weight", "blk.0.attn_q_norm.weight",
                               "blk.0.attn_k_norm.weight"}),
    ("Gemma", "gemma", False, set()),
    ("Gemma2", "gemma2", False, {"blk.0.post_attention_norm.weight", "blk.0.post_ffw_norm.weight"}),
])
def test_merged_gguf_of_other_families(tmp_path, kind, arch, permuted, extra):
    import transformers

    from lora_studio.engine.text.gguf_export import write_merged_gguf
    torch.manual_seed(0)
    config = getattr(transformers, f"{kind}Config")(
        **{**SMALL, "vocab_size": 400 if kind == "Qwen2" else SMALL["vocab_size"]})
    model = getattr(transformers, f"{kind}ForCausalLM")(config)
    model.save_pretrained(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    write_merged_gguf(tmp_path / "m.gguf", model.state_dict(), config, MODEL, "f16", kind)
    reader = gguf.GGUFReader(tmp_path / "m.gguf")
    assert fields(reader)["general.architecture"] == arch
    found = tensors(reader)
    common = {"token_embd.weight", "output_norm.weight", "blk.0.attn_norm.weight",
              "blk.0.ffn_norm.weight"} | {f"blk.0.{GGUF_NAMES[m]}.weight" for m in TARGETS}
    assert set(found) == common | extra
    norm = model.state_dict()["model.norm.weight"].numpy()
    shift = 1 if kind.startswith("Gemma") else 0   # Gemma's norms scale by 1 + weight
    np.testing.assert_array_equal(np.asarray(found["output_norm.weight"].data), norm + shift)
    tokens = fields(reader)["tokenizer.ggml.tokens"]
    assert len(tokens) == config["vocab_size"] == found["token_embd.weight"].shape[-1]
    if kind == "Qwen2":   # an embedding larger than the tokenizer: one unused token a row
        assert tokens[-1] == "[PAD399]" and tokens[383] != "[PAD383]"
        assert fields(reader)["tokenizer.ggml.token_type"][-1] == gguf.TokenType.UNUSED
    if kind == "Gemma2":
        meta = fields(reader)
        assert (meta["gemma2.attn_logit_softcapping"], meta["gemma2.final_logit_softcapping"],
                meta["gemma2.attention.sliding_window"]) == (50.0, 30.0, 4096)
    q = model.state_dict()["model.layers.0.self_attn.q_proj.weight"].numpy()
    want = llama_cpp_permute(q, HEADS) if permuted else q
    np.testing.assert_allclose(np.asarray(found["blk.0.attn_q.weight"].data, dtype=np.float32),
                               want, atol=1e-3)


def test_llama3_rope_scaling_is_written_as_llama_cpps_rope_freqs(tmp_path):
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from lora_studio.engine.text.gguf_export import llama3_rope_factors
    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    config = LlamaConfig(**SMALL, rope_parameters=rope)
    plain = 1.0 / (500000.0 ** (torch.arange(0, HEAD_DIM, 2, dtype=torch.float64) / HEAD_DIM))
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    factors = llama3_rope_factors(config.to_dict())
    assert 1.0 in factors and 32.0 in factors   # short, long and blended wavelengths
    np.testing.assert_allclose(factors, (plain / scaled.double()).numpy(), rtol=1e-5)
    assert llama3_rope_factors(SMALL) is None
    from lora_studio.engine.text.gguf_export import write_merged_gguf
    from transformers import LlamaForCausalLM
    write_merged_gguf(tmp_path / "l3.gguf", LlamaForCausalLM(config).state_dict(),
                      {**config.to_dict(), "architectures": ["LlamaForCausalLM"]},
                      MODEL, "q8_0", "l3")
    written = tensors(gguf.GGUFReader(tmp_path / "l3.gguf"))["rope_freqs.weight"]
    np.testing.assert_array_equal(np.asarray(written.data), factors)
    with pytest.raises(Exception, match="yarn rope scaling"):
        llama3_rope_factors({**SMALL, "rope_parameters": {"rope_type": "yarn", "factor": 4.0}})


def spm_style_tokenizer(folder: Path, prepend: bool = True) -> Path:
    """A Llama 2 / Mistral / Gemma style tokenizer.json: BPE with byte fallback, '▁' for
    spaces, merges in the order they apply."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast
    specials = ["<unk>", "<s>", "</s>"]
    pieces = ["▁", "t", "h", "e", "a", "▁t", "he", "▁the", "at", "▁a"]
    vocab = {t: i for i, t in enumerate(specials + [f"<0x{b:02X}>" for b in range(256)] + pieces)}
    merges = [("▁", "t"), ("h", "e"), ("▁t", "he"), ("a", "t"), ("▁", "a")]
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁")] * prepend
                                          + [normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")
    fast.chat_template = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}"
    fast.save_pretrained(folder)
    return folder


def test_sentencepiece_style_tokenizer_gets_llama_model_bytes_and_merge_order_scores(tmp_path):
    from lora_studio.engine.text.gguf_export import add_tokenizer
    folder = spm_style_tokenizer(tmp_path / "tok")
    writer = gguf.GGUFWriter(str(tmp_path / "t.gguf"), "llama")
    add_tokenizer(writer, folder, "llama")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    meta = fields(gguf.GGUFReader(tmp_path / "t.gguf"))
    assert meta["tokenizer.ggml.model"] == "llama" and "tokenizer.ggml.pre" not in meta
    tokens, scores, types = (meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.scores"],
                             meta["tokenizer.ggml.token_type"])
    score = {t: s for t, s in zip(tokens, scores)}
    # llama.cpp joins the pair whose result scores highest: merges in their order
    assert score["▁t"] > score["he"] > score["▁the"] > score["at"] > score["▁a"]
    assert types[tokens.index("<0x41>")] == gguf.TokenType.BYTE
    assert types[tokens.index("</s>")] == gguf.TokenType.CONTROL
    assert meta["tokenizer.ggml.eos_token_id"] == tokens.index("</s>")
    assert meta["tokenizer.chat_template"].startswith("{% for m in messages %}")
    assert meta["tokenizer.ggml.add_space_prefix"] is True   # Llama 2 / Mistral: '▁' first


def test_a_tokenizer_without_the_leading_space_says_so_to_llama_cpp(tmp_path):
    from lora_studio.engine.text.gguf_export import adds_space_prefix
    assert adds_space_prefix(spm_style_tokenizer(tmp_path / "llama2"))
    assert not adds_space_prefix(spm_style_tokenizer(tmp_path / "gemma", prepend=False))


@pytest.mark.parametrize("rslora", [False, True])
def test_llama_cpps_sum_of_base_and_adapter_gguf_is_the_merged_weight(lora, tmp_path, rslora):
    """llama.cpp adds (adapter.lora.alpha / r) * lora_b @ lora_a to each stored weight: that
    must be PEFT's merged weight in llama.cpp's row order, rsLoRA's alpha / sqrt(r) too."""
    from peft import get_peft_model_state_dict

    from lora_studio.engine.text.gguf_export import write_adapter_gguf
    _, model = lora
    config = {**model.peft_config["default"].to_dict(), "use_rslora": rslora}
    model_config = json.loads((MODEL / "config.json").read_text())
    write_adapter_gguf(tmp_path / "a.gguf", get_peft_model_state_dict(model), config,
                       model_config, "a")
    reader = gguf.GGUFReader(tmp_path / "a.gguf")
    found, alpha = tensors(reader), fields(reader)["adapter.lora.alpha"]
    peft_scale = 8 / (4 ** 0.5 if rslora else 4)
    for module, heads in (("q_proj", HEADS), ("k_proj", KV_HEADS), ("v_proj", None)):
        lin = getattr(model.base_model.model.model.layers[1].self_attn, module)
        base = lin.base_layer.weight.detach().numpy()
        a, b = peft_pair(model, 1, module)
        merged = base + peft_scale * b @ a
        name = f"blk.1.{GGUF_NAMES[module]}.weight"
        lora_a, lora_b = np.asarray(found[name + ".lora_a"].data), np.asarray(found[name + ".lora_b"].data)
        stored = llama_cpp_permute(base, heads) if heads else base
        got = stored + alpha / lora_b.shape[1] * lora_b @ lora_a
        want = llama_cpp_permute(merged, heads) if heads else merged
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_without_the_gguf_package_the_export_says_what_to_install(lora, capsys, monkeypatch):
    run, _ = lora
    monkeypatch.setitem(__import__("sys").modules, "gguf", None)   # import gguf fails
    assert main(["export", str(run.root), "--format", "gguf-f16", "--name", "no gguf"]) == 1
    err = capsys.readouterr().err
    assert 'pip install "lora-studio[gguf]"' in err and "Traceback" not in err
    assert not (run.exports / "no gguf").exists()


def test_an_adapter_tensor_a_gguf_lora_cannot_hold_is_refused_not_dropped(lora, tmp_path):
    from peft import get_peft_model_state_dict

    from lora_studio.engine.text.gguf_export import GgufExportError, write_adapter_gguf
    _, model = lora
    tensors = {**get_peft_model_state_dict(model),
               "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector":
                   torch.ones(64)}
    with pytest.raises(GgufExportError, match="lora_magnitude_vector"):
        write_adapter_gguf(tmp_path / "a.gguf", tensors, model.peft_config["default"].to_dict(),
                           json.loads((MODEL / "config.json").read_text()), "a")


def run_with_template(lora, tmp_path, chat_template):
    """The fixture's adapter in a run whose job set dataset.chat_template."""
    import shutil
    run, _ = lora
    job, _ = parse_job({"model": {"path": str(MODEL), "family": "text"},
                        "dataset": {"path": str(tmp_path / "none.jsonl"),
                                    "chat_template": chat_template},
                        "output": {"output_name": "plain"}})
    other = new_run_dir(tmp_path / "runs", "plain")
    write_job_toml(job, other.job_toml)
    for name in ("adapter_model.safetensors", ADAPTER_CONFIG):
        shutil.copy(run.final / name, other.final / name)
    return other


def test_plain_chat_template_renders_what_training_tokenised():
    from transformers import AutoTokenizer

    from lora_studio.data.text_records import Turn
    from lora_studio.engine.text.gguf_folder import PLAIN_CHAT_TEMPLATE
    from lora_studio.engine.text.tokens import _fallback_pieces
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    turns = (Turn("system", "Be brief."), Turn("user", "Hi?"), Turn("assistant", "Hello."),
             Turn("user", "And?"), Turn("assistant", "Bye."))
    trained = "".join(p if isinstance(p, str) else tokenizer.decode(p)
                      for p, _ in _fallback_pieces(tokenizer, turns))
    tokenizer.chat_template = PLAIN_CHAT_TEMPLATE
    assert tokenizer.apply_chat_template([{"role": t.role, "content": t.content} for t in turns],
                                         tokenize=False) == trained


def test_a_run_trained_without_the_models_template_exports_the_plain_one(lora, tmp_path):
    from lora_studio.engine.text.gguf_folder import PLAIN_CHAT_TEMPLATE
    run = run_with_template(lora, tmp_path, "none")
    assert main(["export", str(run.root), "--format", "gguf-q8_0"]) == 0
    folder = run.exports / "plain-q8_0-gguf"
    meta = fields(gguf.GGUFReader(folder / "plain-q8_0.gguf"))
    assert meta["tokenizer.chat_template"] == PLAIN_CHAT_TEMPLATE
    text = (folder / "Modelfile").read_text(encoding="utf-8")
    assert ('TEMPLATE """{{ if .System }}System: {{ .System }}\n{{ end }}User: {{ .Prompt }}\n'
            'Assistant: {{ .Response }}<|end|>\n"""') in text
    assert "PARAMETER stop <|end|>" in text.splitlines()


def test_a_runs_own_chat_template_goes_into_the_gguf_and_the_modelfile(lora, tmp_path):
    custom = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}<pad>{% endfor %}"
              "{% if add_generation_prompt %}<assistant>{% endif %}")
    run = run_with_template(lora, tmp_path, custom)
    assert main(["export", str(run.root), "--format", "gguf-f16"]) == 0
    folder = run.exports / "plain-f16-gguf"
    assert fields(gguf.GGUFReader(folder / "plain-f16.gguf"))["tokenizer.chat_template"] == custom
    text = (folder / "Modelfile").read_text(encoding="utf-8")
    assert "<user>{{ .Prompt }}<pad><assistant>{{ .Response }}<pad>" in text
    assert "PARAMETER stop <pad>" in text.splitlines()
