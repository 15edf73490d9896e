"""The Triton cache kernel computes eager attention's function (fp32, to rounding) for decode steps and
prefills, grouped-query models, odd head sizes, boolean and additive masks and several blocks of
slots; it reads the shared prefix from row 0 only; the static loop on it gives ``generate``'s ids.
Without a GPU it runs in Triton's interpreter (tests/conftest.py)."""

from __future__ import annotations

import pytest
import torch
from tiny_llm import AttentionHeads, shared_prefix_prompts, tiny_llama
from transformers.models.llama.modeling_llama import eager_attention_forward

from llamavid_eval.generation import cache_attention as kernel_module
from llamavid_eval.generation.cache_attention import CACHE_ATTENTION, cache_attention, runs_here
from llamavid_eval.generation.decoding import GraphDecoder, generate_eager

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _case(heads, kv_heads, queries, slots, dim, seed, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    rows = 3
    query = torch.randn(rows, queries, heads, dim, generator=generator).transpose(1, 2)  # strided, as models pass it
    key = torch.randn(rows, kv_heads, slots, dim, generator=generator)
    value = torch.randn(rows, kv_heads, slots, dim, generator=generator)
    seen = torch.rand(rows, 1, queries, slots, generator=generator) > 0.3
    seen[..., 0] = True  # every query sees a key
    return [t.to(DEVICE, dtype) for t in (query, key, value)] + [seen.to(DEVICE)]


def _eager(query, key, value, seen, groups):
    """transformers' eager attention, in fp64, with the additive mask it takes."""
    mask = torch.zeros(seen.shape, dtype=torch.float64, device=seen.device).masked_fill_(~seen, -torch.inf)
    query, key, value = (t.double() for t in (query, key, value))
    out, _ = eager_attention_forward(AttentionHeads(groups), query, key, value, mask, scaling=query.shape[-1] ** -0.5)
    return out


@pytest.mark.parametrize(
    ("heads", "kv_heads", "queries", "slots", "dim"),
    [(4, 4, 1, 72, 16), (8, 2, 1, 40, 16), (8, 2, 7, 150, 16), (6, 1, 3, 20, 12), (4, 4, 28, 70, 8), (2, 2, 1, 5, 24)],
)
@pytest.mark.parametrize("boolean", [True, False])
def test_kernel_is_eager_attention(heads, kv_heads, queries, slots, dim, boolean):
    query, key, value, seen = _case(heads, kv_heads, queries, slots, dim, seed=heads + queries + slots)
    expected = _eager(query, key, value, seen, heads // kv_heads)
    mask = (
        seen if boolean else torch.zeros(seen.shape, device=DEVICE).masked_fill_(~seen, torch.finfo(torch.float32).min)
    )
    got, weights = cache_attention(AttentionHeads(heads // kv_heads), query, key, value, mask, scaling=dim**-0.5)
    assert weights is None and got.shape == (3, queries, heads, dim) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_a_mask_shared_by_all_rows_and_queries_broadcasts():
    query, key, value, seen = _case(4, 2, 5, 30, 16, seed=7)
    one = seen[:1, :, :1].clone()
    got, _ = cache_attention(AttentionHeads(2), query, key, value, one, scaling=0.25)
    expected = _eager(query, key, value, one.expand_as(seen), 2)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_no_mask_attends_to_every_slot():
    query, key, value, seen = _case(4, 4, 2, 90, 16, seed=8)
    got, _ = cache_attention(AttentionHeads(1), query, key, value, None, scaling=0.25)
    torch.testing.assert_close(got.double(), _eager(query, key, value, torch.ones_like(seen), 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("heads", "kv_heads", "queries"), [(4, 4, 1), (8, 2, 3)])
def test_scores_rising_block_by_block_rescale_what_came_before(heads, kv_heads, queries):
    """Each block of slots holds larger scores than the one before, so every block moves the running
    maximum and the earlier blocks' sums must be rescaled each time."""
    query, key, value, seen = _case(heads, kv_heads, queries, 100, 16, seed=12)
    key = key * torch.linspace(0.2, 3.0, 100, device=DEVICE)[None, None, :, None]
    got, _ = cache_attention(AttentionHeads(heads // kv_heads), query, key, value, seen, scaling=0.25)
    torch.testing.assert_close(got.double(), _eager(query, key, value, seen, heads // kv_heads), rtol=1e-5, atol=1e-5)


def test_shared_prefix_is_read_from_row_zero_only():
    """Rows 1 and 2 hold junk in the prefix slots: with ``shared_prefix`` the kernel must not read it."""
    query, key, value, seen = _case(8, 2, 3, 100, 16, seed=9)
    prefix = 70  # more than one block of slots
    clean_key, clean_value = key.clone(), value.clone()
    clean_key[1:, :, :prefix] = key[:1, :, :prefix]
    clean_value[1:, :, :prefix] = value[:1, :, :prefix]
    shared = torch.tensor(prefix, dtype=torch.int32, device=DEVICE)
    got, _ = cache_attention(AttentionHeads(4), query, key, value, seen, scaling=0.25, shared_prefix=shared)
    torch.testing.assert_close(got.double(), _eager(query, clean_key, clean_value, seen, 4), rtol=1e-5, atol=1e-5)
    unshared, _ = cache_attention(AttentionHeads(4), query, key, value, seen, scaling=0.25)
    assert not torch.allclose(unshared[1:], got[1:], atol=1e-3)  # the junk is there to be read
    torch.testing.assert_close(unshared[0], got[0])


def test_bfloat16_is_close_to_the_exact_function():
    query, key, value, seen = _case(8, 2, 5, 80, 16, seed=10, dtype=torch.bfloat16)
    got, _ = cache_attention(AttentionHeads(4), query, key, value, seen, scaling=0.25)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.double(), _eager(query, key, value, seen, 4), rtol=2e-2, atol=2e-2)


def test_refuses_a_strided_head_dimension_and_an_uninterpreted_cpu(monkeypatch):
    query, key, value, seen = _case(4, 4, 1, 10, 16, seed=11)
    with pytest.raises(ValueError, match="contiguous"):
        cache_attention(AttentionHeads(1), query, key.transpose(2, 3).contiguous().transpose(2, 3), value, seen, 0.25)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not runs_here(torch.device("cpu")) and runs_here(torch.device("cuda"))
    if DEVICE.type == "cpu":
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
            kernel_module.cache_attention(AttentionHeads(1), query, key, value, seen, 0.25)


@pytest.mark.parametrize("kv_heads", [8, 2])
@pytest.mark.parametrize("shared", [5, 0])
def test_static_loop_on_the_kernel_decodes_as_generate(kv_heads, shared):
    """Prefill and steps on the kernel; the second batch reuses the prefix left in the cache."""
    model = tiny_llama(kv_heads, seed=kv_heads).to(DEVICE)
    settings = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    decoder = GraphDecoder(model, batch_size=4, graph_tokens=6, bucket=8, attention=CACHE_ATTENTION)
    with torch.inference_mode():
        for seed in (3, 4):
            inputs = shared_prefix_prompts(model, shared, seed)
            eager = generate_eager(model, inputs, eos_token_id=1, **settings)
            assert decoder.generate(inputs, eos_token_id=1, **settings) == eager, seed
    assert [loop.attention for loop in decoder._states.values()] == [CACHE_ATTENTION]
