"""The one table of floating-point type names users may write (``bf16``, ``half``, ...).

Names only, no torch: the training config validates against it without importing torch; the model
layer turns a canonical name into a ``torch.dtype`` (``llamavid_eval.model.loading.torch_dtype``).
"""

from __future__ import annotations

CANONICAL = ("float32", "bfloat16", "float16")
"""The names written to configs and outputs (``getattr(torch, name)`` is the dtype)."""

ALIASES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}  # fmt: skip


def dtype_name(name: str, what: str = "dtype") -> str:
    """The canonical name of ``name`` (``bf16`` -> ``bfloat16``); raises naming ``what`` and the choices."""
    try:
        return ALIASES[str(name).lower()]
    except KeyError:
        raise ValueError(f"{what}={name!r} is not a known dtype; use one of {', '.join(ALIASES)}") from None
