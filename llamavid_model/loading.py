"""Load a released LLaMA-VID checkpoint (unchanged files) into ``LlamaVidForCausalLM``.

Every file comes from a path the user gives or the checkpoint's config names, resolved against the
checkpoint folder, the working directory and the local Hugging Face cache - never the network.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import init_empty_weights
from transformers import AutoTokenizer, BertTokenizer, PreTrainedTokenizerBase
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.instructblip.configuration_instructblip import (
    InstructBlipQFormerConfig,
    InstructBlipVisionConfig,
)
from transformers.tokenization_utils_sentencepiece import SentencePieceBackend
from transformers.utils import is_flash_attn_2_available

from llamavid_eval.core.dtypes import dtype_name
from llamavid_eval.model.configuration_llamavid import LlamaVidConfig
from llamavid_eval.model.modeling_llamavid import LlamaVidForCausalLM
from llamavid_eval.model.processing import image_processor_for, image_size_from_processor_name
from llamavid_eval.model.weights import (
    WeightFileError,
    checkpoint_key_to_model,
    read_checkpoint,
    read_lavis_qformer,
    read_lavis_vision,
)

QFORMER_PREFIX = "visual_tokenizer.qformer."
EVA_HEAD_DIM = 88  # EVA-ViT-G: 1408 wide, 16 heads


@dataclass
class LoadedLlamaVid:
    """Everything needed to run a checkpoint."""

    model: LlamaVidForCausalLM
    tokenizer: PreTrainedTokenizerBase
    qformer_tokenizer: PreTrainedTokenizerBase
    image_processor: CLIPImageProcessorPil
    checkpoint_dir: Path
    vision_tower_path: Path | None = None  # the LAVIS tower file used (recorded by saved fine-tunes)


def resolve_path(value: str | os.PathLike, *, what: str, arg: str, bases: tuple[Path, ...] = ()) -> Path:
    """Find a file or folder: as given, under ``bases``, the working directory, or the local HF cache."""
    raw = Path(os.path.expanduser(str(value)))
    candidates = [raw] if raw.is_absolute() else [*(base / raw for base in bases), Path.cwd() / raw]
    # Released configs store cluster paths such as ./model_zoo/LAVIS/eva_vit_g.pth: try the tail too.
    if not raw.is_absolute() and len(raw.parts) > 2:
        candidates += [base / Path(*raw.parts[-2:]) for base in bases]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    cached = _from_hf_cache(str(value))
    if cached is not None:
        return cached
    tried = ", ".join(str(candidate) for candidate in candidates)
    raise FileNotFoundError(
        f"{what} not found: {value!r} (tried {tried} and the local Hugging Face cache). "
        f"Pass its location with the model argument `{arg}=<path>`."
    )


def _from_hf_cache(repo_id: str) -> Path | None:
    if repo_id.count("/") > 1 or repo_id.startswith((".", "/")):
        return None
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached (or not a repo id): the caller reports what it tried
        return None


def torch_dtype(dtype: str | torch.dtype, what: str = "dtype") -> torch.dtype:
    """A ``torch.dtype`` from any name of the one dtype table (``bf16``, ``float16``, ...) or a dtype."""
    return dtype if isinstance(dtype, torch.dtype) else getattr(torch, dtype_name(dtype, what))


def load_llamavid(
    pretrained: str | os.PathLike,
    *,
    vision_tower: str | os.PathLike | None = None,
    qformer: str | os.PathLike | None = None,
    qformer_tokenizer: str | os.PathLike | None = None,
    image_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    attn_implementation: str = "sdpa",
) -> LoadedLlamaVid:
    """Build the model from a checkpoint folder plus the LAVIS vision (and optionally Q-Former) files."""
    if attn_implementation == "flash_attention_2" and not is_flash_attn_2_available():
        # transformers would say so too, but only after every weight file (~14 GB for 7B) was read.
        raise ImportError(
            "attn_implementation=flash_attention_2 needs the flash-attn package on a CUDA machine: "
            'pip install -e ".[gpu]" (or use attn_implementation=sdpa)'
        )
    checkpoint_dir = resolve_path(pretrained, what="LLaMA-VID checkpoint", arg="pretrained")
    config = LlamaVidConfig.from_released(checkpoint_dir)
    bases = (checkpoint_dir, checkpoint_dir.parent)
    size = image_size or image_size_from_processor_name(config.image_processor)

    tower_path = resolve_path(
        vision_tower or config.mm_vision_tower or "eva_vit_g.pth",
        what="EVA-ViT-G weights (config key mm_vision_tower)",
        arg="vision_tower",
        bases=bases,
    )
    state = read_lavis_vision(tower_path, size)
    checkpoint_state, sources = _read_mapped_checkpoint(checkpoint_dir)
    state.update(checkpoint_state)
    if not any(name.startswith(QFORMER_PREFIX) for name in checkpoint_state):
        # As the original: the LAVIS Q-Former only initialises what the checkpoint does not hold.
        qformer_path = resolve_path(
            qformer or getattr(config, "pretrain_qformer", None) or "instruct_blip_vicuna7b_trimmed.pth",
            what="LAVIS InstructBLIP Q-Former weights (checkpoint has no vlm_att_encoder)",
            arg="qformer",
            bases=bases,
        )
        qformer_state = read_lavis_qformer(qformer_path)
        sources.update(dict.fromkeys(qformer_state, qformer_path))
        state.update({k: v for k, v in qformer_state.items() if k not in checkpoint_state})
    sources.update(dict.fromkeys((k for k in state if k.startswith("vision_tower.")), tower_path))

    bert_dir = resolve_path(
        qformer_tokenizer or "bert-base-uncased",
        what="Q-Former tokenizer (bert-base-uncased)",
        arg="qformer_tokenizer",
        bases=bases,
    )
    config.vision_config = InstructBlipVisionConfig(**_vision_config(state, size, tower_path))
    config.qformer_config = InstructBlipQFormerConfig(**_qformer_config(state, bert_dir, config))
    config._attn_implementation = attn_implementation  # propagates to the sub-configs

    with init_empty_weights():
        model = LlamaVidForCausalLM(config)
    _assign_weights(model, state, sources, dtype)
    model.to(device).eval()

    tokenizer = load_llm_tokenizer(checkpoint_dir)
    bert_tokenizer = load_qformer_tokenizer(bert_dir)
    rows = model.visual_tokenizer.qformer.embeddings.word_embeddings.weight.shape[0]
    if rows != len(bert_tokenizer):
        raise WeightFileError(
            f"Q-Former word embeddings have {rows} rows but the tokenizer in {bert_dir} has {len(bert_tokenizer)} "
            "tokens (with [DEC]); pass the matching bert tokenizer with `qformer_tokenizer=`."
        )
    return LoadedLlamaVid(
        model, tokenizer, bert_tokenizer, image_processor_for(size), checkpoint_dir, tower_path.resolve()
    )


def load_llm_tokenizer(checkpoint_dir: Path) -> PreTrainedTokenizerBase:
    """The Vicuna tokenizer, encoding exactly as the released (slow, sentencepiece) one did.

    transformers 5 converts ``tokenizer.model`` to a ``tokenizers`` pipeline that ignores the
    model's normaliser flags (e.g. ``remove_extra_whitespaces``), which changes prompt ids for some
    sentencepiece models; the sentencepiece backend runs the model itself, as 4.31's slow
    ``LlamaTokenizer`` did. ``legacy=True`` keeps sentencepiece's own dummy-prefix handling; the
    prompts we encode never contain special tokens inside a text chunk, where the two modes differ.
    """
    if (checkpoint_dir / "tokenizer.model").is_file():
        return SentencePieceBackend.from_pretrained(checkpoint_dir, legacy=True)
    return AutoTokenizer.from_pretrained(checkpoint_dir)


def decode_answer(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> str:
    """Text of generated ids up to the first eos, special tokens skipped (as the original's
    ``batch_decode(skip_special_tokens=True)``: rows that finished early in a batch are padded with
    the pad/unk id). Sentencepiece decodes byte-fallback pieces (``<0x0A>``) back to bytes."""
    if tokenizer.eos_token_id in ids:
        ids = ids[: ids.index(tokenizer.eos_token_id)]
    sp_model = getattr(tokenizer, "sp_model", None)
    if sp_model is not None:
        special = set(tokenizer.all_special_ids)
        return sp_model.decode([i for i in ids if 0 <= i < sp_model.get_piece_size() and i not in special])
    return tokenizer.decode(ids, skip_special_tokens=True)


def load_qformer_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """BERT tokenizer with ``[DEC]`` as bos and left truncation, as LLaMA-VID builds it."""
    tokenizer = BertTokenizer.from_pretrained(path, truncation_side="left")
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    return tokenizer


def _read_mapped_checkpoint(checkpoint_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Path]]:
    state: dict[str, torch.Tensor] = {}
    sources: dict[str, Path] = {}
    for name, tensor, path in read_checkpoint(checkpoint_dir):
        mapped = checkpoint_key_to_model(name)
        if mapped is not None:
            state[mapped] = tensor
            sources[mapped] = path
    return state, sources


def _vision_config(state: dict[str, torch.Tensor], image_size: int, path: Path) -> dict:
    """Tower sizes read from the weights (the tiny test towers differ from EVA-ViT-G's 39 blocks)."""
    width = state["vision_tower.embeddings.class_embedding"].shape[-1]
    blocks = {int(name.split(".")[3]) for name in state if name.startswith("vision_tower.encoder.layers.")}
    if blocks != set(range(len(blocks))) or not blocks:
        raise WeightFileError(f"{path}: vision blocks are not numbered 0..N-1 (found {sorted(blocks)[:5]}...)")
    patch = state["vision_tower.embeddings.patch_embedding.weight"].shape[-1]
    return {
        "hidden_size": width,
        "num_hidden_layers": len(blocks),
        "num_attention_heads": max(1, width // EVA_HEAD_DIM),
        "intermediate_size": state["vision_tower.encoder.layers.0.mlp.fc1.weight"].shape[0],
        "patch_size": patch,
        "image_size": image_size,
        "layer_norm_eps": 1e-6,
        "hidden_act": "gelu",
        "qkv_bias": True,
    }


def _qformer_config(state: dict[str, torch.Tensor], bert_dir: Path, config: LlamaVidConfig) -> dict:
    """Q-Former sizes from the weights; heads/eps/activation from the BERT config beside the tokenizer."""
    bert_file = bert_dir / "config.json"
    bert = json.loads(bert_file.read_text()) if bert_file.is_file() else {}
    words = state[QFORMER_PREFIX + "embeddings.word_embeddings.weight"]
    layers = {int(name.split(".")[4]) for name in state if name.startswith(QFORMER_PREFIX + "encoder.layer.")}
    hidden = words.shape[1]
    return {
        "vocab_size": words.shape[0],
        "hidden_size": hidden,
        "num_hidden_layers": len(layers),
        "num_attention_heads": bert.get("num_attention_heads", max(1, hidden // 64)),
        "intermediate_size": state[QFORMER_PREFIX + "encoder.layer.0.intermediate_query.dense.weight"].shape[0],
        "max_position_embeddings": state[QFORMER_PREFIX + "embeddings.position_embeddings.weight"].shape[0],
        "layer_norm_eps": bert.get("layer_norm_eps", 1e-12),
        "hidden_act": bert.get("hidden_act", "gelu"),
        "cross_attention_frequency": 2,
        "encoder_hidden_size": config.mm_hidden_size,
        "pad_token_id": bert.get("pad_token_id", 0),
    }


def _assign_weights(
    model: LlamaVidForCausalLM, state: dict[str, torch.Tensor], sources: dict[str, Path], dtype: torch.dtype
) -> None:
    """Strict load: every parameter present with its exact shape; extra names are an error too."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise WeightFileError(
            f"{len(missing)} weights missing, e.g. {missing[:3]} (expected shape {tuple(expected[missing[0]].shape)}); "
            "check that `pretrained=` is a LLaMA-VID checkpoint and `vision_tower=` the LAVIS eva_vit_g.pth"
        )
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise WeightFileError(f"unexpected weights {unexpected[:3]} from {sources.get(unexpected[0])}")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise WeightFileError(
                f"{sources.get(name)}: weight {name!r} has shape {tuple(tensor.shape)}, "
                f"model expects {tuple(expected[name].shape)}"
            )
    model.load_state_dict({name: tensor.to(dtype) for name, tensor in state.items()}, strict=True, assign=True)
