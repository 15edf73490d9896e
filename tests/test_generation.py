"""Decoding shared by the video model and the judge, on a grouped-query (Llama-3-like) model: the
grouped attention computes eager attention's function, and the static loop gives ``generate``'s ids,
stopping at extra stop tokens where asked; fused norms, RoPE and MLP gates compute the unfused model's
function."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_llm import AttentionHeads, shared_prefix_prompts, tiny_llama
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import eager_attention_forward

from llamavid_eval.generation import fusion
from llamavid_eval.generation.attention import (
    GROUPED_ATTENTION,
    attention_implementation,
    grouped_attention,
    grouped_attention_for,
)
from llamavid_eval.generation.decoding import GraphDecoder, generate_eager
from llamavid_eval.generation.fusion import (
    GateFusedMLP,
    RotaryFusedAttention,
    fuse_gated_mlps,
    fuse_rms_norms,
    fuse_rotary,
)


@pytest.mark.parametrize(("heads", "kv_heads", "queries"), [(4, 4, 1), (8, 2, 1), (8, 2, 5), (6, 1, 3)])
def test_grouped_attention_is_eager_attention(heads, kv_heads, queries):
    generator = torch.Generator().manual_seed(heads * 10 + queries)
    rows, length, dim = 3, 11, 16
    query = torch.randn(rows, heads, queries, dim, generator=generator, dtype=torch.float64)
    key = torch.randn(rows, kv_heads, length, dim, generator=generator, dtype=torch.float64)
    value = torch.randn(rows, kv_heads, length, dim, generator=generator, dtype=torch.float64)
    hidden = torch.rand(rows, 1, queries, length, generator=generator) < 0.3
    hidden[..., 0] = False  # every query sees at least one key
    mask = torch.zeros(hidden.shape, dtype=torch.float64).masked_fill_(hidden, torch.finfo(torch.float64).min)
    module = AttentionHeads(heads // kv_heads)
    expected, _ = eager_attention_forward(module, query, key, value, mask, scaling=dim**-0.5)
    got, weights = grouped_attention(module, query, key, value, mask, scaling=dim**-0.5)
    assert weights is None and got.shape == (rows, queries, heads, dim)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    # and it differs when a key is unmasked: the mask reaches every stacked head
    unmasked, _ = grouped_attention(module, query, key, value, torch.zeros_like(mask), scaling=dim**-0.5)
    assert not torch.allclose(unmasked, got)


@pytest.fixture(scope="module")
def gqa_model():
    return tiny_llama(kv_heads=2, seed=0)


def test_grouped_query_model_decodes_as_generate(gqa_model):
    inputs = shared_prefix_prompts(gqa_model)
    settings = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    with torch.inference_mode():
        eager = generate_eager(gqa_model, inputs, eos_token_id=1, **settings)
        graph = GraphDecoder(gqa_model, batch_size=4, graph_tokens=4, bucket=8).generate(
            inputs, eos_token_id=1, **settings
        )
    assert [len(row) for row in eager] == [6, 6, 6]
    assert graph == eager


def test_rows_end_at_extra_stop_tokens(gqa_model):
    """A stop token ends its row (included), other rows go on; past the graph part as well."""
    inputs = shared_prefix_prompts(gqa_model)
    settings = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    with torch.inference_mode():
        free = generate_eager(gqa_model, inputs, eos_token_id=1, **settings)
        stop = free[0][2]  # row 0 reaches it by its third token
        for graph_tokens in (6, 2):
            decoder = GraphDecoder(gqa_model, batch_size=3, graph_tokens=graph_tokens, bucket=8)
            rows = decoder.generate(inputs, eos_token_id=1, stop_token_ids=[stop], **settings)
            expected = [row[: row.index(stop) + 1] if stop in row else row for row in free]
            assert rows == expected, graph_tokens
    assert rows[0][-1] == stop and len(rows[0]) <= 3


def test_fused_norms_compute_the_same_logits():
    """Compiled norms (one kernel each) give the model's logits to fp32 rounding, at every prompt length."""
    torch.manual_seed(1)
    config = LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "variance_epsilon"):
                module.weight.normal_()  # not all ones: the weight must be applied
    prompts = [torch.randint(0, 97, shape) for shape in ((3, 9), (2, 5), (1, 1))]
    with torch.inference_mode():
        expected = [model(ids).logits for ids in prompts]
        assert fuse_rms_norms(model) == 2 * 2 + 1
        got = [model(ids).logits for ids in prompts]
    assert all(norm._compiled_call_impl is not None for norm in model.modules() if hasattr(norm, "variance_epsilon"))
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_norms_stay_unfused_when_compiling_fails(monkeypatch, caplog):
    """No Triton or C compiler: a warning, and the model runs exactly as before."""
    model = LlamaForCausalLM(
        LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4)
    ).eval()

    def broken_compile(self, *args, **kwargs):
        self._compiled_call_impl = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no working C compiler"))

    monkeypatch.setattr(torch.nn.Module, "compile", broken_compile)
    with caplog.at_level("WARNING"):
        assert fuse_rms_norms(model) == 0
    assert "RMSNorms left unfused" in caplog.text and "no working C compiler" in caplog.text
    assert all(module._compiled_call_impl is None for module in model.modules())
    with torch.inference_mode():
        model(torch.randint(0, 97, (2, 4)))


def test_grouped_attention_takes_a_2d_padding_mask(gqa_model):
    """A forward given a 2D padding mask (as the constrained judge runs its prompts) computes under
    grouped attention what it computes with transformers' eager attention."""
    generator = torch.Generator().manual_seed(5)
    ids = torch.randint(2, 97, (3, 9), generator=generator)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[0, :4] = 0  # left padding
    mask[2, :2] = 0
    with torch.inference_mode():
        with attention_implementation(gqa_model.config, "eager"):
            eager = gqa_model(input_ids=ids, attention_mask=mask).logits
        with grouped_attention_for(gqa_model.config):
            assert gqa_model.config._attn_implementation == GROUPED_ATTENTION
            grouped = gqa_model(input_ids=ids, attention_mask=mask).logits
    valid = mask.bool()
    assert torch.allclose(grouped[valid], eager[valid], atol=1e-5)


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_fused_rotary_computes_the_same_logits(kv_heads):
    """RoPE compiled into one function: the unfused model's logits to fp32 rounding, at every prompt
    length, with and without grouped-query heads and position offsets."""
    torch.manual_seed(2)
    config = LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
    )
    model = LlamaForCausalLM(config).eval()
    fused = copy.deepcopy(model)
    prompts = [torch.randint(0, 97, shape) for shape in ((3, 9), (2, 5), (1, 1))]
    with torch.inference_mode():
        assert fuse_rotary(fused) == 2
        for ids in prompts:
            positions = torch.arange(ids.shape[1]).expand(ids.shape[0], -1) + 7
            expected = model(ids, position_ids=positions).logits
            torch.testing.assert_close(fused(ids, position_ids=positions).logits, expected, rtol=1e-5, atol=1e-5)
    assert all(type(layer.self_attn) is RotaryFusedAttention for layer in fused.model.layers)
    assert set(fused.state_dict()) == set(model.state_dict())  # released weights still load by name


def test_fused_model_decodes_as_generate(gqa_model):
    """The static loop on a fused model (prefix cache, padding, decode steps) gives ``generate``'s ids."""
    fused = copy.deepcopy(gqa_model)
    inputs = shared_prefix_prompts(gqa_model)
    settings = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    with torch.inference_mode():
        eager = generate_eager(gqa_model, inputs, eos_token_id=1, **settings)
        assert fuse_rotary(fused) == 2 and fuse_gated_mlps(fused) == 2
        graph = GraphDecoder(fused, batch_size=4, graph_tokens=4, bucket=8).generate(
            shared_prefix_prompts(fused), eos_token_id=1, **settings
        )
    assert graph == eager


@pytest.mark.parametrize(
    ("fuse", "compiled", "what", "part"),
    [
        (fuse_rotary, "_compiled_rotate_pair", "RoPE", "self_attn"),
        (fuse_gated_mlps, "_compiled_silu_gate", "MLP gates", "mlp"),
    ],
)
def test_layers_stay_unfused_when_compiling_fails(monkeypatch, caplog, fuse, compiled, what, part):
    model = LlamaForCausalLM(
        LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4)
    ).eval()

    def broken(*args, **kwargs):
        raise RuntimeError("no working C compiler")

    monkeypatch.setattr(f"llamavid_eval.generation.fusion.{compiled}", broken)
    with caplog.at_level("WARNING"):
        assert fuse(model) == 0
    assert f"{what} left unfused" in caplog.text and "no working C compiler" in caplog.text
    assert all(type(getattr(layer, part)) not in (RotaryFusedAttention, GateFusedMLP) for layer in model.model.layers)


def test_fused_gates_compute_the_same_logits():
    """SiLU and gate product compiled into one function: the unfused model's logits to fp32 rounding,
    at every prompt length; a model whose MLPs are not SiLU-gated is left as it is."""
    torch.manual_seed(4)
    config = LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4
    )
    model = LlamaForCausalLM(config).eval()
    fused = copy.deepcopy(model)
    with torch.inference_mode():
        assert fuse_gated_mlps(fused) == 2
        for shape in ((3, 9), (2, 5), (1, 1)):
            ids = torch.randint(0, 97, shape)
            torch.testing.assert_close(fused(ids).logits, model(ids).logits, rtol=1e-5, atol=1e-5)
    assert all(type(layer.mlp) is GateFusedMLP for layer in fused.model.layers)
    assert set(fused.state_dict()) == set(model.state_dict())
    config.hidden_act = "gelu"
    assert fuse_gated_mlps(LlamaForCausalLM(config)) == 0


def test_compiled_parts_specialise_on_widths_only(monkeypatch):
    """One compiled RoPE graph serves every row and token count, with the widths as constants (with
    symbolic widths the GPU kernel indexed through runtime divisions, six times slower)."""
    graphs = []

    def recording(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    monkeypatch.setattr(
        "llamavid_eval.generation.fusion._compiled_rotate_pair",
        torch.compile(fusion._rotate_pair, backend=recording, **fusion.ROWS_DYNAMIC),
    )
    torch._dynamo.reset()
    for rows, tokens in ((3, 4), (5, 7), (2, 9)):
        query, key = torch.randn(rows, tokens, 32), torch.randn(rows, tokens, 16)
        angles = torch.randn(rows, tokens, 8)
        got_query, got_key, _ = fusion.rotary_heads(query, key, key, angles, angles, head_dim=8)
        assert got_query.shape == (rows, 4, tokens, 8) and got_key.shape == (rows, 2, tokens, 8)
    (graph,) = graphs
    values = [node.meta["example_value"] for node in graph.graph.nodes if node.op == "placeholder"]
    tensors = [value.shape for value in values if isinstance(value, torch.Tensor)]
    assert sorted(shape[1] for shape in tensors) == [8, 8, 16, 32]
    assert all(type(shape[1]) is int for shape in tensors)
    assert all(isinstance(shape[0], torch.SymInt) for shape in tensors)
