"""Static-cache (CUDA-graph) decoding gives the eager path's tokens; answers end at eos."""

from __future__ import annotations

import gc
import warnings

import pytest
import torch
from media import coloured_frames

from llamavid_eval.generation.decoding import GraphDecoder, LlmInputs, generate_eager, prefix_kv
from llamavid_eval.model.inference import LlamaVidRunner, Question, plan_batches, prepare_batch, prepared_batches
from llamavid_eval.model.loading import decode_answer, load_llamavid
from llamavid_eval.model.video import VideoDecodeError


@pytest.fixture(scope="module")
def loaded(tiny_release):
    return load_llamavid(tiny_release.checkpoint, qformer_tokenizer=tiny_release.bert_tokenizer)


def _questions(settings: dict) -> list[Question]:
    videos = {name: list(coloured_frames(count, seed=seed)) for name, count, seed in (("a", 3, 1), ("b", 5, 2))}
    asks = [("a", "what colour is it?"), ("b", "which direction does the shape move?"), ("a", "describe the video")]
    return [Question(q, key, (lambda key=key: videos[key]), dict(settings)) for key, q in asks]


def _inputs(loaded, questions):
    runner = LlamaVidRunner(loaded, batch_size=len(questions), decode_workers=0)
    batch = prepare_batch(questions, list(range(len(questions))), loaded.image_processor)
    with torch.inference_mode():
        return runner.llm_inputs(questions, runner.visual_tokens(questions, batch))


@pytest.mark.parametrize(("graph_tokens", "batch_size"), [(16, 3), (16, 5), (3, 5)])
def test_static_cache_decoding_matches_eager(loaded, graph_tokens, batch_size):
    """Same ids with padded rows (batch 5 > 3 rows) and with answers continued past the graph part."""
    inputs = _inputs(loaded, _questions({}))
    assert inputs.prefix is not None  # the shared system prompt is run once
    settings = {"max_new_tokens": 7, "do_sample": False, "pad_token_id": 0}
    with torch.inference_mode():
        eager = generate_eager(loaded.model, inputs, eos_token_id=loaded.tokenizer.eos_token_id, **settings)
        # an "eos" that row 0 emits at its 2nd step: rows then finish at different steps
        eos = eager[0][1]
        eager_eos = generate_eager(loaded.model, inputs, eos_token_id=eos, **settings)
        decoder = GraphDecoder(loaded.model, batch_size=batch_size, graph_tokens=graph_tokens, bucket=8)
        graph = decoder.generate(inputs, eos_token_id=loaded.tokenizer.eos_token_id, **settings)
        graph_eos = decoder.generate(inputs, eos_token_id=eos, **settings)  # reuses the cache
    assert [len(row) for row in eager] == [7, 7, 7]
    assert graph == eager
    assert [row[: row.index(eos) + 1] if eos in row else row for row in graph_eos] == [
        row[: row.index(eos) + 1] if eos in row else row for row in eager_eos
    ]
    assert eager_eos[0][:2] == eager[0][:2] and len(eager_eos[0]) >= 2


@pytest.mark.parametrize("beams", [1, 2])
def test_runner_answers_are_the_same_with_static_decoding(loaded, beams):
    questions = _questions({"max_new_tokens": 6, "min_new_tokens": 6, "num_beams": beams})
    eager = LlamaVidRunner(loaded, batch_size=2).answer(questions)
    static = LlamaVidRunner(loaded, batch_size=2, compile=True).answer(questions)  # beam search: eager path
    assert static == eager and all(eager)


def test_answers_end_at_eos_and_skip_padding(loaded):
    """Rows that finished early are padded with the unk/pad id; it must not reach the answer text."""
    tokenizer = loaded.tokenizer
    words = tokenizer("red ball", add_special_tokens=False)["input_ids"]
    text = decode_answer(tokenizer, words)
    assert text == "red ball"
    assert decode_answer(tokenizer, [*words, tokenizer.eos_token_id, 0, 0]) == text
    assert decode_answer(tokenizer, [*words, tokenizer.eos_token_id, *words]) == text


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_splice_places_text_and_visual_tokens_with_labels(loaded, padding_side):
    """Rows with and without <image>, different lengths: each row equals its unbatched layout."""
    model = loaded.model
    embed = model.get_input_embeddings()
    width = embed.weight.shape[1]
    ids = [torch.tensor([1, 5, -200, 7, 8]), torch.tensor([1, 9, 10]), torch.tensor([1, -200, 4])]
    visual = [torch.randn(4, width), None, torch.randn(2, width)]
    labels = [torch.tensor([-100, -100, -100, 7, 8]), torch.tensor([-100, 9, 10]), torch.tensor([-100, -100, 4])]
    with torch.no_grad():
        out = model.splice_visual_tokens(ids, visual, labels, padding_side=padding_side)
        expected = [
            torch.cat([embed(ids[0][:2]), visual[0], embed(ids[0][3:])]),
            embed(ids[1]),
            torch.cat([embed(ids[2][:1]), visual[2], embed(ids[2][2:])]),
        ]
    expected_labels = [[-100, -100] + [-100] * 4 + [7, 8], [-100, 9, 10], [-100] + [-100] * 2 + [4]]
    assert out.inputs_embeds.shape == (3, 8, width)
    for row, (want, want_labels) in enumerate(zip(expected, expected_labels, strict=True)):
        span = slice(8 - len(want), 8) if padding_side == "left" else slice(0, len(want))
        torch.testing.assert_close(out.inputs_embeds[row, span], want)
        assert out.attention_mask[row].sum() == len(want) and out.attention_mask[row, span].all()
        assert out.labels[row, span].tolist() == want_labels
        assert (out.inputs_embeds[row][out.attention_mask[row] == 0] == 0).all()
        assert (out.labels[row][out.attention_mask[row] == 0] == -100).all()
    with pytest.raises(ValueError, match="prompt 1 has an <image> placeholder but no frames"):
        model.splice_visual_tokens([ids[0], ids[2]], [visual[0], None])


def test_a_short_first_batch_holds_one_video_per_decode_worker_and_the_rest_are_full():
    """``first_videos``: the GPU starts after one round of decoding, then batches are full again;
    every question is planned once, generation settings never mixed."""
    asks = [Question("q", key, lambda: [], {"max_new_tokens": 3}) for key in "aaabbbcccdddeee"]
    asks.append(Question("q", "f", lambda: [], {}))  # other settings: planned after the rest
    assert plan_batches(asks, batch_size=8) == [[0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [15]]
    assert plan_batches(asks, batch_size=8, first_videos=2) == [
        [0, 1, 2, 3, 4, 5],
        [6, 7, 8, 9, 10, 11, 12, 13],
        [14],
        [15],
    ]
    # a batch size smaller than the videos' questions closes the first batch first
    assert plan_batches(asks, batch_size=4, first_videos=2) == plan_batches(asks, batch_size=4)


def test_the_runner_answers_in_its_plans_batches_a_short_first_one_included(loaded):
    """:meth:`LlamaVidRunner.plan` is what runs: one video per decode worker first (here "a" alone,
    though its questions and "b"'s would fill one batch), and what the fill probe times."""
    questions = _questions({"max_new_tokens": 2}) * 2  # video "a": 4 questions, "b": 2
    runner = LlamaVidRunner(loaded, batch_size=8, decode_workers=1)
    assert runner.plan(questions) == plan_batches(questions, batch_size=8, first_videos=1)
    answered = []
    runner.answer(questions, answered.append)
    assert answered == [len(batch) for batch in runner.plan(questions)] == [4, 2]


@pytest.mark.parametrize("workers", [0, 2])
def test_videos_decoded_one_per_worker_task_make_the_planned_batches(loaded, workers):
    """Batches assembled from per-video worker tasks equal preparing each batch on its own, also
    for a video whose questions are split over two batches (each batch loads it)."""
    questions = _questions({}) * 2  # video "a": 4 questions, "b": 2
    plan = plan_batches(questions, batch_size=3)  # [a, a, a], [a, b, b]
    made = list(prepared_batches(questions, plan, loaded.image_processor, workers, pin_memory=False))
    for batch, indices in zip(made, plan, strict=True):
        alone = prepare_batch(questions, indices, loaded.image_processor)
        assert batch.indices == indices and batch.segments == alone.segments
        assert torch.equal(batch.pixel_values, alone.pixel_values)
    assert [batch.pixel_values.shape[0] for batch in made] == [3, 3 + 5]


def test_a_broken_video_in_a_worker_process_is_named(loaded):
    def broken():
        raise ValueError("could not decode /data/broken.mp4: moov atom not found")

    questions = [*_questions({"max_new_tokens": 2}), Question("what?", "broken", broken, {"max_new_tokens": 2})]
    with pytest.raises(ValueError, match="broken.mp4"):
        LlamaVidRunner(loaded, batch_size=2, decode_workers=2).answer(questions)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_video_that_cannot_be_decoded_is_raised_as_itself_with_the_way_out(loaded, workers):
    """Not as torch's "Caught VideoDecodeError in DataLoader worker process 1" with the file further down."""

    def damaged():
        raise VideoDecodeError("cannot decode video /data/damaged.mp4: pyav: cut short")

    questions = [*_questions({"max_new_tokens": 2}), Question("what?", "damaged", damaged, {"max_new_tokens": 2})]
    with pytest.raises(VideoDecodeError) as caught:
        LlamaVidRunner(loaded, batch_size=2, decode_workers=workers).answer(questions)
    message = str(caught.value)
    assert message.startswith("cannot decode video /data/damaged.mp4: pyav: cut short. No answer of this run")
    assert "run `llamavid prepare` again" in message and "DataLoader worker" not in message


def test_the_heap_is_frozen_while_batches_run_and_unfrozen_after(loaded):
    """Full collections skip the objects alive before the loop (a pause of ~0.2 s each otherwise);
    the process's collector is left as found, also when a batch fails."""
    frozen_at_progress = []
    runner = LlamaVidRunner(loaded, batch_size=2, decode_workers=0)
    assert gc.get_freeze_count() == 0
    runner.answer(_questions({"max_new_tokens": 2}), lambda _: frozen_at_progress.append(gc.get_freeze_count()))
    assert len(frozen_at_progress) == 2 and min(frozen_at_progress) > 0
    assert gc.get_freeze_count() == 0

    def broken():
        raise ValueError("could not decode /data/broken.mp4")

    with pytest.raises(ValueError, match="broken.mp4"):
        runner.answer([Question("what?", "broken", broken, {"max_new_tokens": 2})])
    assert gc.get_freeze_count() == 0


def test_a_heap_frozen_by_the_caller_stays_frozen(loaded):
    runner = LlamaVidRunner(loaded, batch_size=3, decode_workers=0)
    gc.freeze()
    try:
        runner.answer(_questions({"max_new_tokens": 2}))
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("beams", [1, 2])
def test_shared_prefix_cache_gives_the_full_prompt_result(loaded, beams):
    """Greedy and beam search from the cached system prompt equal running the whole prompt."""
    inputs = _inputs(loaded, _questions({}))
    settings = {
        "max_new_tokens": 5,
        "num_beams": beams,
        "do_sample": False,
        "pad_token_id": 0,
        "eos_token_id": loaded.tokenizer.eos_token_id,
    }
    with torch.inference_mode():
        shared = generate_eager(loaded.model, inputs, **settings)
        whole = generate_eager(loaded.model, LlmInputs(inputs.embeds, inputs.attention_mask), **settings)
    assert shared == whole


def test_prefill_writes_the_whole_prompts_keys_and_values(loaded):
    """After the prefill, every row's valid cache slots (the shared prefix's and its own) hold what
    one forward pass over its whole prompt computes, in every layer; the first token is that pass's
    greedy one. A slot read or written in the wrong place in any layer changes the next layers' keys
    (the answers' ids alone did not show it: the tiny model gave the same ids)."""
    inputs = _inputs(loaded, _questions({}))
    assert inputs.prefix is not None
    decoder = GraphDecoder(loaded.model, batch_size=3, bucket=8)
    valid = inputs.attention_mask.bool()
    positions = (valid.long().cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        first = decoder.generate(inputs, eos_token_id=loaded.tokenizer.eos_token_id, max_new_tokens=1)
        whole = loaded.model(
            inputs_embeds=inputs.embeds, attention_mask=inputs.attention_mask, position_ids=positions, use_cache=True
        )
    (loop,) = decoder._states.values()
    total = inputs.embeds.shape[1]
    for layer, reference in zip(loop.cache.layers, whole.past_key_values.layers, strict=True):
        for row in range(inputs.rows):
            slots = valid[row].nonzero().flatten()
            for got, expected in ((layer.keys, reference.keys), (layer.values, reference.values)):
                torch.testing.assert_close(got[row, :, :total][:, slots], expected[row][:, slots], rtol=1e-4, atol=1e-5)
    assert first == whole.logits[:, -1].argmax(-1)[:, None].tolist()


@pytest.mark.parametrize("shared_prefix", [True, False])
def test_static_loop_honours_min_new_tokens_and_works_without_a_prefix(loaded, shared_prefix):
    """eos banned before min_new_tokens as generate bans it; left-padded rows with no cached prefix
    (a padding query then attends only to itself) still give generate's ids."""
    inputs = _inputs(loaded, _questions({}))
    if not shared_prefix:
        inputs = LlmInputs(inputs.embeds, inputs.attention_mask)
    settings = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    with torch.inference_mode():
        first = generate_eager(loaded.model, inputs, eos_token_id=loaded.tokenizer.eos_token_id, **settings)
        eos = first[1][0]  # row 1 would end at its first token
        eager = generate_eager(loaded.model, inputs, eos_token_id=eos, min_new_tokens=3, **settings)
        graph = GraphDecoder(loaded.model, batch_size=4, bucket=8).generate(
            inputs, eos_token_id=eos, min_new_tokens=3, **settings
        )
    assert [row[: row.index(eos) + 1] if eos in row else row for row in eager] == graph
    assert all(len(row) >= 3 for row in graph) and eos not in graph[1][:2]


def test_decoding_raises_no_library_deprecation_warning(loaded):
    """transformers 5.x deprecates generate's ``past_key_values`` for ``cache`` (removed in 6.0):
    our calls must use the supported names so that lifting the ``<6`` pin is a one-line change."""
    inputs = _inputs(loaded, _questions({}))
    settings = {"max_new_tokens": 2, "do_sample": False, "pad_token_id": 0, "eos_token_id": 2}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        generate_eager(loaded.model, inputs, **settings)
        GraphDecoder(loaded.model, batch_size=3).generate(inputs, **settings)
        prefix_kv(loaded.model, torch.tensor([[1, 5, 6]]))


def test_static_loop_rewrites_the_prefix_after_a_batch_without_one(loaded):
    """The cached prefix is kept between batches only while no other batch overwrote its slots."""
    inputs = _inputs(loaded, _questions({}))
    other = LlmInputs(inputs.embeds * 0.5, inputs.attention_mask)  # same shape, other tokens, no cached prefix
    settings = {"max_new_tokens": 5, "do_sample": False, "pad_token_id": 0, "eos_token_id": 2}
    decoder = GraphDecoder(loaded.model, batch_size=3, bucket=8)
    with torch.inference_mode():
        expected = generate_eager(loaded.model, inputs, **settings)
        runs = [decoder.generate(batch, **settings) for batch in (inputs, other, inputs, inputs)]
    assert len(decoder._states) == 1  # one loop (cache) served all four batches
    assert [runs[0], runs[2], runs[3]] == [[row[: row.index(2) + 1] if 2 in row else row for row in expected]] * 3


def test_a_loop_reused_with_other_stop_tokens_stops_only_at_the_current_ones(loaded):
    """The stop table lives on the device and is rebuilt only when the stops change: a batch with
    an extra stop token must not leave it in force for the next batch, which has none."""
    inputs = _inputs(loaded, _questions({}))
    settings = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    eos = loaded.tokenizer.eos_token_id
    decoder = GraphDecoder(loaded.model, batch_size=3, bucket=8)
    with torch.inference_mode():
        eager = generate_eager(loaded.model, inputs, eos_token_id=eos, **settings)
        stop = eager[0][1]  # row 0's second token
        stopped = decoder.generate(inputs, eos_token_id=eos, stop_token_ids=[stop], **settings)
        plain = decoder.generate(inputs, eos_token_id=eos, **settings)
    assert len(decoder._states) == 1 and stopped[0] == eager[0][:2]
    assert plain == eager and len(eager[0]) > 2


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_the_qformer_mask_built_here_gives_the_library_masks_tokens(loaded, implementation, monkeypatch):
    """The Q-Former gets its padding mask already in 4D form (so transformers never asks the GPU
    whether anything is padded); its tokens equal those from the 2D mask transformers expands."""
    import llamavid_eval.model.visual_tokens as visual_tokens

    questions = _questions({})
    runner = LlamaVidRunner(loaded, batch_size=3, decode_workers=0)
    batch = prepare_batch(questions, [0, 1, 2], loaded.image_processor)
    qformer_config = loaded.model.visual_tokenizer.qformer.config
    monkeypatch.setattr(qformer_config, "_attn_implementation_internal", implementation)
    with torch.inference_mode():
        ours = runner.visual_tokens(questions, batch)
        monkeypatch.setattr(visual_tokens, "_prepared_mask", lambda mask, *_: mask)
        library = runner.visual_tokens(questions, batch)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(ours, library, strict=True))


def test_a_temperature_without_sampling_is_refused_not_silently_greedy():
    """lmms-eval records gen_kwargs as given: a greedy run must not be written down as temperature=0.2."""
    from llamavid_eval.model.inference import generation_kwargs

    with pytest.raises(ValueError, match=r"temperature=0.2 with do_sample=False: .* add do_sample=True"):
        generation_kwargs({"temperature": 0.2, "do_sample": False})
    assert generation_kwargs({"temperature": 0.2, "do_sample": True})["do_sample"] is True
    assert generation_kwargs({"temperature": 0, "do_sample": False}) == {"do_sample": False, "max_new_tokens": 1024}
