"""GGUF files for the in-process judge: find the file, and turn it into a plain transformers folder.

transformers reads GGUF itself (``from_pretrained(folder, gguf_file=name)``, dequantising to torch
tensors with the ``gguf`` package); this module only decides *which* file a user meant and writes the
dequantised model as a normal folder for servers that cannot read GGUF (``transformers serve``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

GGUF_SUFFIX = ".gguf"
INSTALL = 'pip install gguf (or pip install "llamavid-eval[gguf]")'
_OTHERWISE = (
    "or give the model's transformers folder or hub id, or serve the file with llama.cpp (LLAMAVID_JUDGE=local)"
)


class GGUFError(ValueError):
    """A GGUF file transformers cannot load in process; the message names the file and the fix."""


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
    from transformers import AutoModelForCausalLM

    tokenizer, quantized = load(path, "cpu")
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


def check(path: str | Path) -> str:
    """Fail early, before any GPU work, for what would fail at load: no ``gguf`` package, a tensor type
    transformers cannot dequantise (``gguf``'s own dequantisers), an architecture it cannot map to a
    transformers model. Reads the file's header only (loading its config would parse it all).
    Returns ``"<file>: <architecture>, tensor types ..."``."""
    folder, name = locate(path)
    gguf = _gguf_package()
    from gguf.quants import _type_traits  # the dequantisers gguf has (no public listing)
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    file = folder / name
    reader = gguf.GGUFReader(file)
    readable = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, *_type_traits}
    types = {t.tensor_type for t in reader.tensors}
    unreadable = sorted(t.name for t in types - readable)
    if unreadable:
        raise GGUFError(
            f"{file} holds tensors of type(s) {', '.join(unreadable)}, which transformers cannot dequantise; "
            f"use a file of another quantisation of the same model (Q8_0, Q6_K, Q4_K_M, F16 load); {_OTHERWISE}"
        )
    field = reader.fields["general.architecture"]
    architecture = bytes(field.parts[field.data[0]]).decode()
    known = {_bare(a) for a in GGUF_SUPPORTED_ARCHITECTURES}  # transformers spells qwen2moe as qwen2_moe ...
    if _bare(architecture) not in known:
        raise GGUFError(f"{file} is a {architecture!r} model, which transformers cannot read from GGUF; {_OTHERWISE}")
    return f"{file}: {architecture}, tensor types {', '.join(sorted(t.name for t in types))}"


def _bare(architecture: str) -> str:
    return architecture.lower().replace("-", "").replace("_", "")


def load(path: str | Path, device: str) -> tuple[Any, Any]:
    """Tokenizer and causal LM from the GGUF ``path`` names, dequantised (float32 on a CPU, bfloat16 on a GPU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = locate(path)
    _gguf_package()
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    try:
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        lm = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=dtype, device_map=device, use_kernels=False
        )
    except (ValueError, NotImplementedError, KeyError) as err:
        raise GGUFError(f"transformers cannot load {folder / name}: {err}; {_OTHERWISE}") from None
    return tok, lm


def _gguf_package() -> Any:
    try:
        import gguf
    except ImportError:
        raise GGUFError(f"reading a .gguf judge needs the gguf package: {INSTALL}") from None
    return gguf
