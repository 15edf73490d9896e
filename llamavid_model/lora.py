"""LoRA adapters (peft) on top of a loaded LLaMA-VID, merged for inference."""

from __future__ import annotations

import os
from pathlib import Path

from llamavid_eval.model.modeling_llamavid import LlamaVidForCausalLM


def apply_lora(model: LlamaVidForCausalLM, adapter: str | os.PathLike) -> LlamaVidForCausalLM:
    """Load a peft adapter folder (as ``training`` writes it) and merge it into the weights."""
    from peft import PeftModel

    path = Path(adapter).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"LoRA adapter not found: {path} has no adapter_config.json (pass the folder `training` saved "
            "with `lora=<folder>`)"
        )
    dtype = model.get_input_embeddings().weight.dtype
    merged = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    return merged.to(dtype).eval()
