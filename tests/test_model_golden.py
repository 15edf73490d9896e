"""Golden parity: the ORIGINAL implementation's tensors for a tiny checkpoint, loaded unchanged."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from llamavid_eval.model.inference import LlamaVidRunner, Question
from llamavid_eval.model.loading import decode_answer, load_llamavid
from llamavid_eval.model.processing import (
    preprocess_frames,
    qformer_tokenizer_inputs,
    question_with_placeholder,
    tokenize_with_image,
    vicuna_v1_prompt,
)

CASES = {"video": [f"video_frame_{i:02d}.png" for i in range(8)], "image": ["image_frame_00.png"]}


@pytest.fixture(scope="module")
def golden(golden_dir):
    loaded = load_llamavid(
        golden_dir / "llama-vid-tiny-golden-224-video-fps-1", qformer_tokenizer=golden_dir / "bert-tiny-uncased"
    )
    reference = load_file(str(golden_dir / "reference.safetensors"))
    meta = json.loads((golden_dir / "reference.json").read_text())
    return loaded, reference, meta


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_stage_matches_the_original(golden, golden_dir, case):
    loaded, ref, meta = golden
    model = loaded.model
    question = meta["cases"][case]["question"]
    frames = [Image.open(golden_dir / "inputs" / name) for name in CASES[case]]

    pixels = preprocess_frames(loaded.image_processor, frames)
    torch.testing.assert_close(pixels, ref[f"{case}.pixel_values"], atol=1e-6, rtol=0)

    prompt = vicuna_v1_prompt([(question_with_placeholder(question), None)])
    assert prompt == meta["cases"][case]["prompt"]
    ids = tokenize_with_image(prompt, loaded.tokenizer)
    assert torch.equal(ids, ref[f"{case}.input_ids"][0])

    with torch.no_grad():
        features = model.encode_frames(pixels)
        torch.testing.assert_close(features, ref[f"{case}.vision_features"], atol=1e-4, rtol=0)
        qformer_ids, qformer_mask = qformer_tokenizer_inputs(loaded.qformer_tokenizer, [question])
        visual = model.visual_tokens(features, [(0, len(frames))], qformer_ids, qformer_mask)
        torch.testing.assert_close(visual[0], ref[f"{case}.visual_tokens"][0], atol=1e-4, rtol=0)
        inputs = model.splice_visual_tokens([ids], visual)
        torch.testing.assert_close(inputs.inputs_embeds, ref[f"{case}.inputs_embeds"], atol=1e-4, rtol=0)
        logits = model(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask).logits
        assert (logits - ref[f"{case}.logits"]).abs().max().item() <= 1e-4
        generated = model.generate(
            inputs_embeds=inputs.inputs_embeds,
            attention_mask=inputs.attention_mask,
            max_new_tokens=16,
            min_new_tokens=16,
            do_sample=False,
            pad_token_id=0,
        )
    assert generated[0].tolist() == ref[f"{case}.generated_ids"].tolist()
    assert decode_answer(loaded.tokenizer, generated[0].tolist()) == meta["cases"][case]["generated_text"]


def test_batched_runner_reproduces_both_cases_in_one_batch(golden, golden_dir):
    """Both reference cases answered together (left padding, shared batch) give the reference text."""
    loaded, _, meta = golden
    questions = [
        Question(
            question=meta["cases"][case]["question"],
            video_key=case,
            load_frames=lambda case=case: [Image.open(golden_dir / "inputs" / n) for n in CASES[case]],
            generation={"max_new_tokens": 16, "min_new_tokens": 16},
        )
        for case in ("video", "image")
    ]
    answers = LlamaVidRunner(loaded, batch_size=2, decode_workers=1).answer(questions)
    assert answers == [
        meta["cases"]["video"]["generated_text"].strip(),
        meta["cases"]["image"]["generated_text"].strip(),
    ]
