"""GGUF files for the in-process judge: find the file, and turn it into a plain transformers folder.

transformers reads GGUF itself (``from_pretrained(folder, gguf_file=name)``, dequantising to torch
tensors with the ``gguf`` package); this module only decides *which* file a user meant and writes the
dequantised model as a normal folder for servers that cannot read GGUF (``transformers serve``).
"""

from __future__ import annotations

from pathlib import Path

GGUF_SUFFIX = ".gguf"


def is_gguf(path: str | Path) -> bool:
    """A ``.gguf`` file, or a folder holding at least one (and no ``config.json``)."""
    p = Path(path).expanduser()
    if p.suffix.lower() == GGUF_SUFFIX:
        return True
    return p.is_dir() and not (p / "config.json").is_file() and any(p.glob(f"*{GGUF_SUFFIX}"))


def locate(path: str | Path) -> tuple[Path, str]:
    """``(folder, file name)`` of the GGUF ``path`` names: the file itself, or the one ``.gguf`` in a folder."""
    p = Path(path).expanduser()
    if p.is_file():
        return p.parent, p.name
    if p.is_dir():
        found = sorted(f.name for f in p.glob(f"*{GGUF_SUFFIX}"))
        if len(found) == 1:
            return p, found[0]
        if found:
            raise ValueError(f"{p} holds several GGUF files ({', '.join(found)}); name one: hf:{p / found[0]}")
    raise FileNotFoundError(f"no GGUF file at {p}: give the path of a .gguf file or of a folder holding exactly one")


def convert_to_folder(path: str | Path, out_dir: str | Path) -> Path:
    """Dequantise the GGUF model at ``path`` into ``out_dir`` (safetensors + tokenizer + chat template)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = locate(path)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    config = quantized.config
    # The loaded model is marked as GGUF-quantised and refuses to save; its tensors are already plain
    # torch tensors, so a model built from the same config (without the GGUF marker) takes them as they are.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config
    out = Path(out_dir)
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
