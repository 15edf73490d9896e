"""What trains: the full model, LoRA on the LLM, or the visual tokenizer alone (stage 1).

The vision tower is always frozen (as in the original; its forward runs without gradients). The
visual tokenizer's parts follow the original's ``bert_type``: ``qformer_pretrain`` trains all of
them, ``*_freeze`` freezes the LAVIS-initialised Q-Former, queries and input norm, ``*_freeze_all``
also the context-attention projectors (the content projector ``mm_projector`` always trains).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from llamavid_eval.model.modeling_llamavid import LlamaVidForCausalLM
from llamavid_eval.training.config import VISUAL_PARTS, TrainConfig

PART_MODULES = {
    "qformer": ("qformer", "query_tokens", "qformer_input_norm"),  # vlm_att_encoder, vlm_att_query, vlm_att_ln
    "attention": ("query_projector", "key_projector", "context_projector"),  # vlm_att_*projector
    "projector": ("content_projector",),  # mm_projector
}


class TrainingModule(nn.Module):
    """Routes ``forward`` to ``forward_multimodal``.

    DDP, FSDP, DeepSpeed and accelerate's autocast all hook a module's ``forward``; calling
    ``forward_multimodal`` on the bare model would bypass gradient synchronisation and sharding.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **batch: object):
        return self.model.forward_multimodal(**batch)


def visual_parts(config: TrainConfig, bert_type: str) -> list[str]:
    """The visual-tokenizer parts that train: ``train_visual`` or, for ``auto``, the original's rule."""
    if config.train_visual != "auto":
        return list(config.train_visual)
    if "freeze_all" in bert_type:
        return ["projector"]
    if "freeze" in bert_type:
        return ["attention", "projector"]
    return list(VISUAL_PARTS)


def configure_trainable(model: LlamaVidForCausalLM, config: TrainConfig) -> nn.Module:
    """Set ``requires_grad`` for the chosen method; LoRA returns the peft-wrapped model.

    For LoRA the visual tokenizer is a peft ``modules_to_save`` module, so the adapter folder holds
    its trained copy and ``merge_and_unload`` (what the backend's ``lora=`` does) puts it back.
    """
    parts = visual_parts(config, model.config.bert_type)
    model.requires_grad_(False)
    if config.method == "full":
        model.model.requires_grad_(True)
        model.lm_head.requires_grad_(True)
    if config.method == "lora":
        from peft import LoraConfig, get_peft_model

        layers = "|".join(config.lora_target_modules)
        lora = LoraConfig(
            r=config.lora_rank,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            # LLM layers only: the Q-Former and the vision tower have their own Linear layers.
            target_modules=rf"model\.layers\.\d+\.(self_attn|mlp)\.({layers})",
            modules_to_save=["visual_tokenizer"] if parts else None,
        )
        model = get_peft_model(model, lora)
        visual = model.base_model.model.visual_tokenizer
        tokenizer = visual.modules_to_save["default"] if parts else visual
    else:
        tokenizer = model.visual_tokenizer
    tokenizer.requires_grad_(False)
    for part in parts:
        for name in PART_MODULES[part]:
            getattr(tokenizer, name).requires_grad_(True)
    return model


def trainable_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    return ((name, p) for name, p in model.named_parameters() if p.requires_grad)


def upcast_trainable(model: nn.Module) -> None:
    """Keep trained weights in fp32 when the frozen rest was loaded in 16 bits (e.g. LoRA on a bf16 base)."""
    for _, parameter in trainable_parameters(model):
        if parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Non-reentrant checkpointing works with frozen inputs (LoRA) without ``enable_input_require_grads``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    base.config.use_cache = False


def build_random_model(
    size: str = "7b",
    config: TrainConfig | None = None,
    device: str | torch.device = "cuda",
    dtype: torch.dtype = torch.bfloat16,
) -> TrainingModule:
    """The real-size architecture with random weights, set up exactly as ``train`` sets it up.

    For timing training steps without the released files: ``config.method`` picks full / LoRA /
    stage 1 and ``config.gradient_checkpointing`` applies. ``module(**batch)`` takes the collator's
    keys (``pixel_values``, ``segments``, ``qformer_input_ids``, ``qformer_attention_mask``,
    ``input_ids``, ``labels``) and returns the output with ``.loss``.
    """
    from llamavid_eval.model.random_init import build_random

    config = config or TrainConfig(train_data="unused")
    model = configure_trainable(build_random(size, device=device, dtype=dtype), config)
    if dtype != torch.float32 and config.method == "lora":
        upcast_trainable(model)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    module = TrainingModule(model)
    module.train()
    module_base(module).vision_tower.eval()
    return module


def module_base(module: TrainingModule) -> LlamaVidForCausalLM:
    """The ``LlamaVidForCausalLM`` inside (below peft's wrappers)."""
    model = module.model
    return model.get_base_model() if hasattr(model, "get_base_model") else model
