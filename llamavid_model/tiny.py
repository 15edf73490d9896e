"""Tiny LLaMA-VID checkpoints in the exact released on-disk layout, for tests and the CPU demo.

``write_tiny_release(root)`` writes, under ``root``::

    llama-vid-tiny/            config.json (released keys, cluster-style paths), sharded
                               pytorch_model-*.bin + index, sentencepiece tokenizer.model
    LAVIS/eva_vit_g.pth        vision tower, LAVIS EVA-ViT-G format (fp16)
    LAVIS/instruct_blip_vicuna7b_trimmed.pth   Q-Former, LAVIS InstructBLIP format (fp16)
    bert-tiny-uncased/         WordPiece vocab + BERT config (plays bert-base-uncased)

Sizes are tiny but every name, key and format is the released one, so loading them exercises
the same code as the 7B files. The tokenizers are trained here from a small corpus (no download).
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm
import torch

from llamavid_eval.model.configuration_llamavid import LlamaVidConfig
from llamavid_eval.model.modeling_llamavid import LlamaVidForCausalLM
from llamavid_eval.model.processing import VICUNA_V1_SYSTEM
from llamavid_eval.model.saving import save_released
from llamavid_eval.model.weights import LAVIS_VISION_RENAMES, model_key_to_checkpoint

BASE_CORPUS = (
    VICUNA_V1_SYSTEM,
    "USER: ASSISTANT: What is happening in the video? Describe the video. Answer with one word.",
    "red green blue yellow left right up down one two three first second shape square ball moves",
    "Which colour appears first? Which direction does the shape move? How many shapes are there?",
    "Abuse Arrest Arson Assault Burglary Explosion Fighting Road Accident Robbery Shooting Normal Video",
)


@dataclass(frozen=True)
class TinyRelease:
    """Paths of a tiny release written by :func:`write_tiny_release`."""

    root: Path
    checkpoint: Path
    vision_tower: Path
    qformer: Path
    bert_tokenizer: Path


def tiny_config(vocab_size: int, qformer_vocab: int, **overrides: object) -> LlamaVidConfig:
    """A small config with the short-video recipe's LLaMA-VID keys (``overrides`` change any of it)."""
    vision_width = int(overrides.pop("vision_width", 176))
    image_size = int(overrides.pop("image_size", 112))
    values: dict = {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 2048,
        "pad_token_id": 0,
        "mm_hidden_size": vision_width,
        "mm_vision_tower": "./model_zoo/LAVIS/eva_vit_g.pth",
        "image_processor": f"./llamavid/processor/clip-patch14-{image_size}",
        "compress_type": "mean",
        "vision_config": {
            "hidden_size": vision_width,
            "num_hidden_layers": 1,
            "num_attention_heads": max(1, vision_width // 88),
            "intermediate_size": 2 * vision_width,
            "image_size": image_size,
        },
        "qformer_config": {
            "vocab_size": qformer_vocab,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "encoder_hidden_size": vision_width,
        },
    }
    values.update(overrides)
    return LlamaVidConfig(**values)


def write_tiny_release(
    root: str | Path, *, seed: int = 0, corpus: tuple[str, ...] = (), shards: int = 3, **overrides: object
) -> TinyRelease:
    """Write a random tiny release under ``root`` (deterministic for a given seed and corpus)."""
    root = Path(root)
    checkpoint, lavis, bert_dir = root / "llama-vid-tiny", root / "LAVIS", root / "bert-tiny-uncased"
    for folder in (checkpoint, lavis, bert_dir):
        folder.mkdir(parents=True, exist_ok=True)
    texts = BASE_CORPUS + tuple(corpus)
    vocab_size = write_sentencepiece_tokenizer(checkpoint, texts)
    qformer_vocab = write_bert_tokenizer(bert_dir, texts) + 1  # + [DEC], added at load time

    torch.manual_seed(seed)
    model = LlamaVidForCausalLM(tiny_config(vocab_size, qformer_vocab, **overrides))
    with torch.no_grad():  # PyTorch's default init leaves these at zero/ones; make them informative
        model.visual_tokenizer.query_tokens.normal_(std=0.02)
        model.vision_tower.embeddings.position_embedding.normal_(std=0.02)
    state = model.state_dict()
    total = sum(t.numel() * t.element_size() for n, t in state.items() if not n.startswith("vision_tower."))
    save_released(model, checkpoint, max_shard_bytes=max(1, total // (2 * shards)), dtype=torch.float16)
    config = json.loads((checkpoint / "config.json").read_text())
    config["mm_vision_tower"] = "./model_zoo/LAVIS/eva_vit_g.pth"
    (checkpoint / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))

    torch.save(lavis_vision_state(model), lavis / "eva_vit_g.pth")
    torch.save({"model": lavis_qformer_state(model)}, lavis / "instruct_blip_vicuna7b_trimmed.pth")
    return TinyRelease(
        root, checkpoint, lavis / "eva_vit_g.pth", lavis / "instruct_blip_vicuna7b_trimmed.pth", bert_dir
    )


def write_sentencepiece_tokenizer(out_dir: Path, texts: tuple[str, ...], vocab_size: int = 400) -> int:
    """Train a byte-fallback BPE sentencepiece model (Llama-like ids: unk 0, bos 1, eos 2)."""
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts * 4),
        model_writer=buffer,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    (out_dir / "tokenizer.model").write_bytes(buffer.getvalue())
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    tokenizer_config = {
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": True,
        "pad_token": None,
        **special,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    return spm.SentencePieceProcessor(model_proto=buffer.getvalue()).get_piece_size()


def write_bert_tokenizer(out_dir: Path, texts: tuple[str, ...]) -> int:
    """A WordPiece vocab: BERT's specials, characters, ``##`` continuations and the corpus words."""
    words = sorted({word for text in texts for word in re.findall(r"[a-z]+", text.lower())})
    chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789.,?!:;'\"-()/"))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars if c.isalnum())]
    vocab += [word for word in words if word not in vocab]
    (out_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True}, indent=2)
    )
    bert_config = {
        "model_type": "bert",
        "vocab_size": len(vocab),
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
        "max_position_embeddings": 512,
        "pad_token_id": 0,
    }
    (out_dir / "config.json").write_text(json.dumps(bert_config, indent=2))
    return len(vocab)


def lavis_vision_state(model: LlamaVidForCausalLM) -> dict[str, torch.Tensor]:
    """Our tower weights under LAVIS EVA-ViT-G names (the inverse of ``weights.read_lavis_vision``)."""
    state: dict[str, torch.Tensor] = {}
    for name, tensor in model.vision_tower.state_dict().items():
        for old, new in reversed(LAVIS_VISION_RENAMES):
            name = name.replace(new, old)
        if name.endswith(".attn.qkv.bias"):
            q_bias, _, v_bias = tensor.chunk(3)
            state[name.replace("qkv.bias", "q_bias")] = q_bias.half().clone()
            state[name.replace("qkv.bias", "v_bias")] = v_bias.half().clone()
        else:
            state[name] = tensor.half().clone()
    return state


def lavis_qformer_state(model: LlamaVidForCausalLM) -> dict[str, torch.Tensor]:
    """Q-Former, queries and ``ln_vision`` under LAVIS InstructBLIP names (+ an unused LM-head key)."""
    tokenizer = model.visual_tokenizer
    state = {"query_tokens": tokenizer.query_tokens.detach().half().clone()}
    for name, tensor in tokenizer.qformer.state_dict().items():
        released = model_key_to_checkpoint(f"visual_tokenizer.qformer.{name}")
        state[released.replace("model.vlm_att_encoder.bert.", "Qformer.bert.")] = tensor.half().clone()
    for name, tensor in tokenizer.qformer_input_norm.state_dict().items():
        state[f"ln_vision.{name}"] = tensor.half().clone()
    state["Qformer.cls.predictions.bias"] = torch.zeros(tokenizer.qformer.config.vocab_size, dtype=torch.float16)
    return state
