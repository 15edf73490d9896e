"""A tiny checkpoint in the released layout: structure, determinism, batching, round trips, errors."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from media import coloured_frames
from transformers.utils import is_flash_attn_2_available

from llamavid_eval.model.configuration_llamavid import LlamaVidConfig
from llamavid_eval.model.inference import LlamaVidRunner, Question
from llamavid_eval.model.loading import load_llamavid
from llamavid_eval.model.saving import save_released
from llamavid_eval.model.weights import WeightFileError


@pytest.fixture(scope="module")
def loaded(tiny_release):
    return load_llamavid(tiny_release.checkpoint, qformer_tokenizer=tiny_release.bert_tokenizer)


def _tokens(loaded, frames, questions):
    from llamavid_eval.model.processing import preprocess_frames, qformer_tokenizer_inputs

    pixels = preprocess_frames(loaded.image_processor, frames)
    ids, mask = qformer_tokenizer_inputs(loaded.qformer_tokenizer, questions)
    with torch.no_grad():
        features = loaded.model.encode_frames(pixels)
        return loaded.model.visual_tokens(features, [(0, len(frames))] * len(questions), ids, mask)


def test_released_layout_is_what_the_loader_reads(tiny_release):
    names = {p.name for p in tiny_release.checkpoint.iterdir()}
    assert {"config.json", "pytorch_model.bin.index.json", "tokenizer.model"} <= names
    assert len([n for n in names if n.startswith("pytorch_model-")]) >= 2
    config = json.loads((tiny_release.checkpoint / "config.json").read_text())
    assert config["model_type"] == "llava" and config["architectures"] == ["LlavaLlamaAttForCausalLM"]
    index = json.loads((tiny_release.checkpoint / "pytorch_model.bin.index.json").read_text())["weight_map"]
    assert "model.vlm_att_encoder.bert.encoder.layer.0.crossattention.self.key.weight" in index
    assert "model.vlm_att_query" in index and "model.mm_projector.2.weight" in index
    assert not any(name.startswith("model.vision_tower") for name in index)
    lavis = torch.load(tiny_release.vision_tower, weights_only=True)
    assert "blocks.0.attn.q_bias" in lavis and "pos_embed" in lavis


def test_two_tokens_per_frame_context_depends_on_question(loaded):
    frames = list(coloured_frames(5))
    first, second = _tokens(loaded, frames, ["what colour is it?", "how many shapes move left?"])
    width = loaded.model.config.hidden_size
    assert loaded.model.config.tokens_per_frame == 2
    assert first.shape == (5 * 2, width)
    context, content = first.view(5, 2, width).unbind(1)
    other_context, other_content = second.view(5, 2, width).unbind(1)
    torch.testing.assert_close(content, other_content)  # content tokens ignore the question
    assert not torch.allclose(context, other_context)  # context tokens follow it
    assert not torch.allclose(content[0], content[1])  # and frames differ


def test_deterministic_and_batch_equals_one_by_one(loaded):
    videos = {name: list(coloured_frames(count, seed=seed)) for name, count, seed in (("a", 3, 1), ("b", 5, 2))}
    asks = [("a", "what colour is it?"), ("b", "which direction does the shape move?"), ("a", "describe the video")]
    questions = [
        Question(q, key, (lambda key=key: videos[key]), {"max_new_tokens": 6, "min_new_tokens": 6}) for key, q in asks
    ]
    batched = LlamaVidRunner(loaded, batch_size=3).answer(questions)
    single = LlamaVidRunner(loaded, batch_size=1, decode_workers=0).answer(questions)
    assert batched == single
    assert LlamaVidRunner(loaded, batch_size=3).answer(questions) == batched
    assert all(answer for answer in batched)


def test_save_then_load_gives_the_same_logits(loaded, tiny_release, tmp_path):
    out = save_released(
        loaded.model,
        tmp_path / "copy",
        vision_tower_path=str(tiny_release.vision_tower),
        safetensors=True,
        max_shard_bytes=200_000,
        tokenizer_from=tiny_release.checkpoint,
    )
    assert (out / "model.safetensors.index.json").is_file()
    again = load_llamavid(out, qformer_tokenizer=tiny_release.bert_tokenizer)
    frames = list(coloured_frames(2))
    torch.testing.assert_close(_tokens(again, frames, ["why?"])[0], _tokens(loaded, frames, ["why?"])[0])


def test_qformer_comes_from_lavis_file_when_checkpoint_lacks_it(loaded, tiny_release, tmp_path):
    state = {k: v for k, v in loaded.model.state_dict().items() if not k.startswith("visual_tokenizer.qformer.")}
    stripped = tmp_path / "no-qformer"
    save_released(loaded.model, stripped, vision_tower_path=str(tiny_release.vision_tower))
    index_path = stripped / "pytorch_model.bin.index.json"
    index = json.loads(index_path.read_text())
    for file_name in set(index["weight_map"].values()):
        shard = torch.load(stripped / file_name, weights_only=True)
        torch.save({k: v for k, v in shard.items() if "vlm_att_encoder" not in k}, stripped / file_name)
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if "vlm_att_encoder" not in k}
    index_path.write_text(json.dumps(index))
    shutil.copy(tiny_release.checkpoint / "tokenizer.model", stripped / "tokenizer.model")
    assert state  # the non-Q-Former weights are still there
    again = load_llamavid(stripped, qformer=tiny_release.qformer, qformer_tokenizer=tiny_release.bert_tokenizer)
    ours = again.model.visual_tokenizer.qformer.state_dict()
    for name, tensor in loaded.model.visual_tokenizer.qformer.state_dict().items():
        torch.testing.assert_close(ours[name], tensor.half().float())


def test_position_embeddings_are_resized_for_a_larger_processor(tiny_release):
    bigger = load_llamavid(tiny_release.checkpoint, qformer_tokenizer=tiny_release.bert_tokenizer, image_size=224)
    frames = list(coloured_frames(1, size=300))
    from llamavid_eval.model.processing import preprocess_frames

    with torch.no_grad():
        features = bigger.model.encode_frames(preprocess_frames(bigger.image_processor, frames))
    assert features.shape[1] == 1 + (224 // 14) ** 2


def _copy_release(tiny_release, tmp_path):
    root = tmp_path / "release"
    shutil.copytree(tiny_release.root, root)
    return root / "llama-vid-tiny", root / "bert-tiny-uncased"


def test_missing_shard_is_named(tiny_release, tmp_path):
    checkpoint, bert = _copy_release(tiny_release, tmp_path)
    (checkpoint / "pytorch_model-00002-of-00004.bin").unlink()
    with pytest.raises(WeightFileError, match="pytorch_model-00002-of-00004.bin is missing"):
        load_llamavid(checkpoint, qformer_tokenizer=bert)


def test_unknown_key_and_wrong_shape_are_named(tiny_release, tmp_path):
    checkpoint, bert = _copy_release(tiny_release, tmp_path)
    shard_path = checkpoint / "pytorch_model-00001-of-00004.bin"
    shard = torch.load(shard_path, weights_only=True)
    name = next(iter(shard))
    torch.save({**shard, "model.vlm_att_surprise.weight": torch.zeros(2)}, shard_path)
    with pytest.raises(WeightFileError, match="vlm_att_surprise"):
        load_llamavid(checkpoint, qformer_tokenizer=bert)
    torch.save({**shard, name: torch.zeros(3, 3)}, shard_path)
    with pytest.raises(WeightFileError, match=r"pytorch_model-00001-of-00004\.bin.*has shape \(3, 3\)"):
        load_llamavid(checkpoint, qformer_tokenizer=bert)


def test_missing_vision_tower_names_the_model_argument(tiny_release, tmp_path):
    checkpoint, bert = _copy_release(tiny_release, tmp_path)
    (checkpoint.parent / "LAVIS" / "eva_vit_g.pth").unlink()
    with pytest.raises(FileNotFoundError, match="vision_tower=<path>"):
        load_llamavid(checkpoint, qformer_tokenizer=bert)


def test_unsupported_config_value_is_rejected_with_its_key():
    with pytest.raises(ValueError, match="mm_projector_type"):
        LlamaVidConfig(mm_projector_type="resampler")
    with pytest.raises(ValueError, match="bert_type"):
        LlamaVidConfig(bert_type="raw_bert")


@pytest.mark.skipif(is_flash_attn_2_available(), reason="flash-attn is installed here")
def test_flash_attention_without_the_package_names_the_extra_before_reading_weights(tmp_path):
    missing = tmp_path / "not-read"
    missing.mkdir()
    with pytest.raises(ImportError, match=r"flash-attn.*\.\[gpu\]"):
        load_llamavid(missing, attn_implementation="flash_attention_2")


def test_continuation_logprob_scores_only_the_answer_tokens(loaded):
    from llamavid_eval.model.processing import question_with_placeholder, tokenize_with_image, vicuna_v1_prompt

    frames = list(coloured_frames(2, seed=5))
    question = Question("what colour is it?", "v", lambda: frames)
    runner = LlamaVidRunner(loaded, batch_size=1, decode_workers=0)
    logprob, greedy = runner.continuation_logprob(question, "red")

    turn = question_with_placeholder(question.question)
    context = tokenize_with_image(vicuna_v1_prompt([(turn, None)]), loaded.tokenizer)
    full = tokenize_with_image(vicuna_v1_prompt([(turn, None)]) + " red", loaded.tokenizer)
    answer = full[len(context) :]
    assert len(answer) >= 1
    visual = _tokens(loaded, frames, [question.question])
    with torch.no_grad():
        inputs = loaded.model.splice_visual_tokens([full], visual)
        logits = loaded.model(inputs_embeds=inputs.inputs_embeds).logits[0]
    steps = logits[-len(answer) - 1 : -1].log_softmax(-1)
    expected = steps.gather(1, answer[:, None]).sum().item()
    assert logprob == pytest.approx(expected, abs=1e-4)
    assert greedy == bool(torch.equal(steps.argmax(-1), answer))
    other, _ = runner.continuation_logprob(question, "green and blue")
    assert other != logprob


def test_shared_prefix_is_found_only_when_every_prompt_has_it():
    from llamavid_eval.model.inference import shared_prefix_length

    image = -200
    same = [torch.tensor([1, 5, 6, image, 7]), torch.tensor([1, 5, 6, image, 8, 9])]
    assert shared_prefix_length(same) == 3
    assert shared_prefix_length([torch.tensor([1, 5, 6, image, 7]), torch.tensor([1, 5, 4, image, 7])]) == 0
    assert shared_prefix_length([torch.tensor([1, 5, 6, 7])]) == 0


def test_dense_split_qformer_layers_compute_the_library_layers_function():
    """The Q-Former's layers with dense query/text parts give the library layer's hidden states
    exactly, with and without text tokens (cross-attention layers and plain ones)."""
    from transformers import InstructBlipQFormerConfig, InstructBlipQFormerModel

    from llamavid_eval.model.visual_tokens import DenseSplitQFormerLayer

    torch.manual_seed(4)
    config = InstructBlipQFormerConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64
    )
    config.encoder_hidden_size = 24
    library = InstructBlipQFormerModel(config).eval()
    dense = InstructBlipQFormerModel(config).eval()
    dense.load_state_dict(library.state_dict())
    for layer in dense.encoder.layer:
        layer.__class__ = DenseSplitQFormerLayer
    queries, frames = torch.randn(3, 5, 32), torch.randn(3, 7, 24)
    ids = torch.randint(1, 50, (3, 4))
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[0, -2:] = 0
    with torch.inference_mode():
        for text in (
            {"input_ids": ids, "attention_mask": mask},
            {"input_ids": ids[:, :0], "attention_mask": mask[:, :5]},
        ):
            expected = library(query_embeds=queries, encoder_hidden_states=frames, **text).last_hidden_state
            got = dense(query_embeds=queries, encoder_hidden_states=frames, **text).last_hidden_state
            assert got.shape == expected.shape
            torch.testing.assert_close(got, expected, rtol=0, atol=0)


def _pair_reference(model, features, frame, ids, mask):
    """One (question, frame) pair's ``[context, content...]`` tokens the plain way: the library's
    Q-Former on that frame alone (no frame sharing), then LLaMA-VID's context formula."""
    tokenizer = model.visual_tokenizer
    for module in tokenizer._cross_attentions:
        module.frame_groups = None
    one = features[frame : frame + 1]
    queries = tokenizer.query_tokens
    out = tokenizer.qformer(
        input_ids=ids,
        attention_mask=torch.cat([torch.ones(1, queries.shape[1], dtype=mask.dtype), mask], dim=1),
        query_embeds=queries,
        encoder_hidden_states=tokenizer.qformer_input_norm(one),
    ).last_hidden_state[:, : queries.shape[1]]
    patches = tokenizer._patches(one)
    scores = tokenizer.query_projector(out) @ tokenizer.key_projector(patches).transpose(-1, -2)
    context = (scores / patches.shape[-1] ** 0.5).softmax(dim=-1) @ patches
    context = tokenizer.context_projector(context.mean(dim=1, keepdim=True))
    return torch.cat([context, tokenizer.content_tokens(one)], dim=1).flatten(0, 1)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_pairs_laid_out_by_frame_give_each_pairs_own_tokens(loaded, implementation, monkeypatch):
    """Items sharing a video (3, 2 and 1 asking about it, interleaved) run the Q-Former frame by frame,
    their queries stacked per frame: each item's tokens are, frame by frame, those of the library's
    Q-Former run on that one (question, frame) pair."""
    from llamavid_eval.model.processing import preprocess_frames, qformer_tokenizer_inputs

    model = copy.deepcopy(loaded.model)  # the reference unsets state that the shared model keeps
    monkeypatch.setattr(model.visual_tokenizer.qformer.config, "_attn_implementation_internal", implementation)
    clips = [list(coloured_frames(count, seed=seed)) for count, seed in ((3, 1), (4, 2), (2, 3))]
    asks = [(0, "what colour is it?"), (1, "which way?"), (0, "describe the video"), (2, "how many?")]
    asks += [(1, "what moves?"), (0, "is it dark?")]
    starts = [0, 3, 7]
    with torch.inference_mode():
        features = model.encode_frames(preprocess_frames(loaded.image_processor, sum(clips, [])))
        # random features: every patch of every frame differs, so a pair reading another frame shows
        features = torch.randn(features.shape, generator=torch.Generator().manual_seed(5)) * 3
        ids, mask = qformer_tokenizer_inputs(loaded.qformer_tokenizer, [question for _, question in asks])
        batched = model.visual_tokens(features, [(starts[clip], len(clips[clip])) for clip, _ in asks], ids, mask)
        for item, (clip, question) in enumerate(asks):
            own_ids, own_mask = qformer_tokenizer_inputs(loaded.qformer_tokenizer, [question])
            frames = range(starts[clip], starts[clip] + len(clips[clip]))
            expected = torch.cat([_pair_reference(model, features, f, own_ids, own_mask) for f in frames])
            torch.testing.assert_close(batched[item], expected, rtol=1e-5, atol=1e-5)


def test_tower_attention_puts_cudnn_first_on_cuda_only_while_the_tower_runs():
    """cuDNN attention is off for the language model (a new plan per decode length) but first for the
    tower's fixed-length frames; on the CPU nothing changes."""
    from torch.nn.attention import SDPBackend

    from llamavid_eval.model.inference import _tower_attention

    enabled = torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(False)
    try:
        with _tower_attention(torch.device("cpu")):
            assert not torch.backends.cuda.cudnn_sdp_enabled()
        with _tower_attention(torch.device("cuda")):
            assert torch.backends.cuda.cudnn_sdp_enabled()
            assert torch._C._get_sdp_priority_order()[0] == int(SDPBackend.CUDNN_ATTENTION)
        assert not torch.backends.cuda.cudnn_sdp_enabled()
    finally:
        torch.backends.cuda.enable_cudnn_sdp(enabled)
