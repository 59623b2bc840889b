"""K-quants (core/engine/gguf/kquants.py): our Q4_K/Q5_K/Q6_K bytes read back by gguf-py's reference
dequantizers (code we did not write) within each block's rounding; llama.cpp's rules for which
tensor gets which type in q4_k_m/q5_k_m/q6_k; and a tiny Llama exported as q4_k_m that llama.cpp
itself (xllamacpp) loads and answers like the f16 export."""
import json

import numpy as np
import pytest

from lorastudio.core.engine.gguf import kquants
from lorastudio.core.models.gguf_arch import file_bytes, tensor_kind, use_more_bits

KINDS = ("q4_k", "q5_k", "q6_k")
# largest |error| of a super-block over its range (max − min(min, 0) for the affine types,
# max |x| for Q6_K): about one step of the widest sub-block once its scale is stored in 6/8 bits
MAX_ERROR = {"q4_k": 1 / 15, "q5_k": 1.5 / 31, "q6_k": 1 / 24}


def qtype(kind):
    from gguf import GGMLQuantizationType as T
    return T[kind.upper()]


def roundtrip(x, kind):
    from gguf import quants
    from gguf.quants import quant_shape_to_byte_shape
    data = kquants.quantize(x, kind)
    assert data.dtype == np.uint8 and data.shape == quant_shape_to_byte_shape(x.shape, qtype(kind))
    back = quants.dequantize(data, qtype(kind))
    assert back.shape == x.shape and np.isfinite(back).all()
    return data, back


def block_range(x, kind):
    b = x.reshape(-1, 256).astype(np.float64)
    return np.abs(b).max(1) if kind == "q6_k" else b.max(1) - np.minimum(b.min(1), 0)


def rmse(a, b):
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - b) ** 2)))


def cases():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((8, 1024)).astype(np.float32)
    outliers = g * 0.02
    outliers[::3, ::97] = 100.0
    outliers[1::3, ::89] = -60.0
    scales = 10.0 ** rng.uniform(-3, 1, (8, 32, 1))                 # every sub-block its own magnitude
    return {"gaussian": g * 0.02, "heavy tails": (rng.standard_t(2, (8, 1024)) * 0.02).astype(np.float32),
            "negative only": -np.abs(g), "positive only": np.abs(g) + 1.0, "outliers": outliers,
            "mixed magnitudes": (g.reshape(8, 32, 32) * scales).reshape(8, 1024).astype(np.float32),
            "small": g * 1e-3, "one row, one block": g[:1, :256]}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", list(cases()))
def test_blocks_read_back_by_gguf_py_within_their_rounding(kind, case):
    x = cases()[case]
    _data, back = roundtrip(x, kind)
    err = np.abs(back - x).reshape(-1, 256).max(1)
    assert (err <= MAX_ERROR[kind] * block_range(x, kind) + 1e-12).all(), (err / block_range(x, kind)).max()


@pytest.mark.parametrize("kind", KINDS)
def test_zero_and_constant_rows(kind):
    zero, _ = roundtrip(np.zeros((3, 512), np.float32), kind)
    assert not zero.any()                                            # an all-zero block is all zero bytes
    for value in (3.0, -2.5, 0.25):         # (far smaller ones put the fp16 super-scale among the subnormals)
        x = np.full((2, 512), value, np.float32)
        _data, back = roundtrip(x, kind)
        assert np.abs(back - x).max() <= 1e-3 * abs(value)


@pytest.mark.parametrize("kind", KINDS)
def test_the_error_is_not_worse_than_a_simple_quantizer(kind):
    """Against llama.cpp's simple types of the same width, min/max per 32 values with fp16 scale
    and min (Q4_1, Q5_1), or for Q6_K a 6-bit absmax per 16 values with an exact scale: the
    search and the mixed scales at least make up for the 6-bit scales, on realistic weights."""
    from gguf import quants

    def absmax6(x):
        s = x.reshape(-1, 16).astype(np.float64)
        step = np.abs(s).max(1, keepdims=True) / 31
        step[step == 0] = 1
        return (np.clip(np.rint(s / step), -32, 31) * step).reshape(x.shape)
    for case in ("gaussian", "heavy tails", "negative only", "mixed magnitudes"):
        x = cases()[case]
        _data, back = roundtrip(x, kind)
        if kind == "q6_k":
            simple = absmax6(x)
        else:
            t = {"q4_k": qtype("q4_1"), "q5_k": qtype("q5_1")}[kind]
            simple = quants.dequantize(quants.quantize(x, t), t)
        assert rmse(back, x) <= rmse(simple, x), case


@pytest.mark.parametrize("kind", ["q4_k", "q5_k"])
def test_the_scale_search_beats_plain_min_max(kind):
    """The iterative search (llama.cpp's rule) against the same format with min/max scales: the
    plain scales are what makes a naive k-quant visibly worse."""
    from gguf import quants
    x = cases()["gaussian"]
    quantize_blocks = kquants.BLOCK_QUANTIZERS[kind]
    searched = quants.dequantize(quantize_blocks(x.reshape(-1, 256)), qtype(kind)).reshape(x.shape)
    plain = quants.dequantize(quantize_blocks(x.reshape(-1, 256), search=False), qtype(kind)).reshape(x.shape)
    assert np.array_equal(searched, roundtrip(x, kind)[1])
    assert rmse(searched, x) < 0.97 * rmse(plain, x)


def test_threads_and_chunks_do_not_change_the_bytes(monkeypatch):
    x = cases()["heavy tails"]
    one = kquants.quantize(x, "q4_k", threads=1)
    monkeypatch.setattr(kquants, "CHUNK_BLOCKS", 3)
    assert np.array_equal(kquants.quantize(x, "q4_k", threads=3), one)
    with pytest.raises(ValueError, match="multiple of 256"):
        kquants.quantize(np.zeros((2, 96), np.float32), "q4_k")


# ---- which tensor gets which type ---------------------------------------------------------------
def llama_tensors(n_layers, hidden, ff, kv, vocab):
    out = [("token_embd.weight", (vocab, hidden))]
    for i in range(n_layers):
        out += [(f"blk.{i}.attn_norm.weight", (hidden,)), (f"blk.{i}.attn_q.weight", (hidden, hidden)),
                (f"blk.{i}.attn_k.weight", (kv, hidden)), (f"blk.{i}.attn_v.weight", (kv, hidden)),
                (f"blk.{i}.attn_output.weight", (hidden, hidden)), (f"blk.{i}.ffn_norm.weight", (hidden,)),
                (f"blk.{i}.ffn_gate.weight", (ff, hidden)), (f"blk.{i}.ffn_up.weight", (ff, hidden)),
                (f"blk.{i}.ffn_down.weight", (hidden, ff))]
    return out + [("output_norm.weight", (hidden,)), ("output.weight", (vocab, hidden))]


def kinds(ftype, tensors, n_layers, tied=False, **model):
    return {name: kquants.tensor_qtype(name, shape, int(name.split(".")[1]) if name.startswith("blk.") else None,
                                       n_layers, ftype, tied, **model) for name, shape in tensors}


def test_q4_k_m_gives_attn_v_and_ffn_down_more_bits_in_llama_cpps_layers():
    got = kinds("q4_k_m", llama_tensors(32, 4096, 14336, 1024, 128256), 32)
    more = [i for i in range(32) if use_more_bits(i, 32)]
    assert more == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]      # Llama-3-8B's q6_k layers
    for i in range(32):
        want = "q6_k" if i in more else "q4_k"
        assert got[f"blk.{i}.attn_v.weight"] == got[f"blk.{i}.ffn_down.weight"] == want
        for part in ("attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"):
            assert got[f"blk.{i}.{part}.weight"] == "q4_k"
        assert got[f"blk.{i}.attn_norm.weight"] == "f32"
    assert got["output.weight"] == "q6_k" and got["token_embd.weight"] == "q4_k" and got["output_norm.weight"] == "f32"
    q5 = kinds("q5_k_m", llama_tensors(32, 4096, 14336, 1024, 128256), 32)
    assert q5["blk.0.attn_v.weight"] == "q6_k" and q5["blk.4.attn_v.weight"] == q5["blk.4.attn_q.weight"] == "q5_k"
    q6 = kinds("q6_k", llama_tensors(32, 4096, 14336, 1024, 128256), 32)
    assert {k for name, k in q6.items() if not name.endswith("norm.weight")} == {"q6_k"}


def test_tied_embeddings_odd_rows_and_special_models_follow_llama_cpp():
    # SmolLM2-135M: rows of 576 do not divide by 256; the tied embedding doubles as the output
    small = kinds("q4_k_m", [t for t in llama_tensors(30, 576, 1536, 192, 49152) if t[0] != "output.weight"], 30,
                  tied=True)
    assert small["token_embd.weight"] == "q8_0"
    assert small["blk.5.attn_q.weight"] == "q5_0" and small["blk.0.attn_v.weight"] == "q8_0"    # q6_k's fallback
    assert small["blk.4.ffn_down.weight"] == "q4_k" and small["blk.5.ffn_down.weight"] == "q6_k"  # rows of 1536
    assert kinds("q5_k_m", [("blk.5.attn_q.weight", (576, 576))], 30)["blk.5.attn_q.weight"] == "q5_1"
    assert kinds("q6_k", [("blk.5.attn_q.weight", (576, 576))], 30)["blk.5.attn_q.weight"] == "q8_0"
    assert kinds("q4_k_m", [("blk.5.attn_q.weight", (100, 100))], 30)["blk.5.attn_q.weight"] == "f16"
    tied = kinds("q4_k_m", [("token_embd.weight", (32000, 2048))], 22, tied=True)
    assert tied["token_embd.weight"] == "q6_k"
    # a 70B (80 layers, grouped-query attention): attn_v one step up; 8 experts: attn_v/attn_k q8_0
    big = kinds("q4_k_m", [("blk.11.attn_v.weight", (1024, 8192))], 80, n_head=64, n_head_kv=8)
    assert big["blk.11.attn_v.weight"] == "q5_k"
    moe = kinds("q4_k_m", [("blk.5.attn_v.weight", (1024, 4096)), ("blk.5.attn_k.weight", (1024, 4096)),
                           ("blk.5.attn_output.weight", (4096, 4096)), ("blk.5.ffn_gate_inp.weight", (8, 4096))],
                32, n_expert=8)
    assert (moe["blk.5.attn_v.weight"], moe["blk.5.attn_k.weight"], moe["blk.5.attn_output.weight"],
            moe["blk.5.ffn_gate_inp.weight"]) == ("q8_0", "q8_0", "q5_k", "f32")


# ---- a tiny Llama, end to end ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny Llama whose rows all divide by 256, trained a few seconds on the helpers' sentences so
    that its next-token choices are real (a random model's are near ties any rounding flips)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.helpers.tiny_models import CORPUS, SENTENCES, add_chat_template, make_tokenizer
    folder = tmp_path_factory.mktemp("kq") / "model"
    tok = make_tokenizer(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(config)
    ids = [[tok.bos_token_id] + tok(t, add_special_tokens=False)["input_ids"] for t in SENTENCES + CORPUS]
    batch = torch.full((len(ids), max(map(len, ids))), tok.pad_token_id)
    mask = torch.zeros_like(batch)
    for i, seq in enumerate(ids):
        batch[i, :len(seq)], mask[i, :len(seq)] = torch.tensor(seq), 1
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(30):
        model(input_ids=batch, attention_mask=mask, labels=batch.masked_fill(mask == 0, -100)).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval().save_pretrained(folder)
    add_chat_template(folder)
    prompts = [seq[:n] for seq in ids[:6] for n in (3, 6)]
    return folder, model, prompts


def export(folder, model, ftype):
    from lorastudio.core.engine.gguf.export_gguf import write_model
    from lorastudio.core.models.gguf_vocab import read_vocab
    config = json.loads((folder / "config.json").read_text())
    vocab = read_vocab(folder, config["vocab_size"], config_ids=config)
    out = folder.parent / f"tiny-{ftype}.gguf"
    write_model(out, model.state_dict(), config, vocab, "tiny", ftype)
    return out, config


def test_q4_k_m_export_reads_back_in_gguf_py_tensor_by_tensor(trained):
    from gguf import GGUFReader, LlamaFileType, quants

    from lorastudio.core.engine.gguf.tensor_names import TensorNames, unpermute_rows
    folder, model, _prompts = trained
    out, config = export(folder, model, "q4_k_m")
    reader = GGUFReader(str(out))
    assert reader.get_field("general.file_type").contents() == LlamaFileType.MOSTLY_Q4_K_M
    found = {t.name: t.tensor_type.name for t in reader.tensors}
    assert found["blk.0.attn_v.weight"] == "Q4_K" and found["blk.1.attn_v.weight"] == "Q6_K"    # use_more_bits(1, 2)
    assert found["blk.0.ffn_down.weight"] == "Q4_K" and found["blk.1.ffn_down.weight"] == "Q6_K"
    assert found["output.weight"] == "Q6_K" and found["blk.0.attn_q.weight"] == "Q4_K"
    assert found["blk.0.attn_norm.weight"] == "F32"
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    names = TensorNames("llama", 2)
    by_name = {names.gguf_name(k): k for k in state}
    for t in reader.tensors:
        back = quants.dequantize(t.data, t.tensor_type).reshape([int(x) for x in reversed(t.shape)])
        if t.name.endswith(("attn_q.weight", "attn_k.weight")):
            heads = 4 if "attn_q" in t.name else 2
            back = unpermute_rows(back, heads)
        source = state[by_name[t.name]]
        bound = {"F32": 1e-7, "Q6_K": 0.03, "Q4_K": 0.1}[t.tensor_type.name]
        assert rmse(back, source) <= bound * rmse(source, 0), t.name
    # the size estimate knows which tensor is which type: to the byte, before the padding
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert file_bytes(shapes, config, "q4_k_m") == sum(int(t.n_bytes) for t in reader.tensors)
    assert tensor_kind("blk.1.attn_v.weight", (128, 256), "q4_k_m", config=config) == "q6_k"


def test_llama_cpp_loads_the_q4_k_m_export_and_answers_like_the_f16_one(trained):
    """The file opened by llama.cpp itself (xllamacpp, in this process): the same next token as the
    f16 export on every prompt, and the runner-up's log-probability (where rounding shows) close."""
    xllamacpp = pytest.importorskip("xllamacpp")
    import torch
    folder, model, prompts = trained

    def top(path):
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx, params.n_parallel, params.port, params.hostnames = 64, 1, 0, ["127.0.0.1"]
        params.ui, params.fit_params, params.verbosity = False, False, 0
        params.cpuparams.n_threads = params.cpuparams_batch.n_threads = 1
        server = xllamacpp.Server(params)
        out = []
        for ids in prompts:
            answer = server.handle_completions({"prompt": ids, "n_predict": 1, "n_probs": 5, "temperature": 0,
                                                "cache_prompt": False, "ignore_eos": True})
            best = answer["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            out.append([(t["id"], t["logprob"]) for t in best])
        return out
    f16, q4 = top(export(folder, model, "f16")[0]), top(export(folder, model, "q4_k_m")[0])
    with torch.no_grad():
        hf = [int(model(torch.tensor([ids])).logits[0, -1].argmax()) for ids in prompts]
    assert [a[0][0] for a in f16] == hf                             # llama.cpp reads f16 as transformers runs it
    assert [a[0][0] for a in q4] == hf
    runner_up = [abs(dict(q)[a[1][0]] - a[1][1]) for a, q in zip(f16, q4) if a[1][0] in dict(q)]
    assert len(runner_up) >= len(prompts) // 2 and np.mean(runner_up) < 0.5
