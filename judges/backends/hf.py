"""``hf`` judge: a local transformers causal LM, in process, greedy, batched.

For machines without a judge server. Decoding is greedy with an explicit generation config, so a
checkpoint's own sampling defaults (Llama-3-Instruct ships temperature 0.6 / top-p 0.9, which made
the study's verdicts irreproducible) are ignored. The model loads on first use, not at
construction, so building a judge from a task YAML costs nothing until something is judged.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from typing import Any

from llamavid_eval.judges.cache import JudgementCache
from llamavid_eval.judges.engine import ConversationJudge, Messages, Reply
from llamavid_eval.judges.prompt import MAX_NEW_TOKENS, render_plain


@functools.lru_cache(maxsize=1)
def _load_pretrained(path: str, device: str | None) -> tuple[Any, Any]:
    """Tokenizer and model, shared by every judge on the same folder: tasks build one judge each, and
    an 8B judge should be loaded once per process, not once per task."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"  # generation continues from the right end of every row
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    lm = AutoModelForCausalLM.from_pretrained(path, dtype="auto").to(device).eval()
    return tok, lm


class HFJudge(ConversationJudge):
    backend = "hf"

    def __init__(
        self,
        model: str,
        *,
        batch_size: int = 16,
        device: str | None = None,
        max_new_tokens: int = MAX_NEW_TOKENS,
        cache: JudgementCache | None = None,
        parse_retries: int = 2,
    ) -> None:
        super().__init__(model, cache=cache, parse_retries=parse_retries)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.device = device
        self.max_new_tokens = max_new_tokens
        self._lock = threading.Lock()
        self._tok: Any = None
        self._lm: Any = None

    def close(self) -> None:
        self._tok = self._lm = None
        _load_pretrained.cache_clear()

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._lm is None:
                self._tok, self._lm = _load_pretrained(self.model, self.device)
            return self._tok, self._lm

    def _render(self, tok: Any, messages: Messages) -> tuple[str, bool]:
        """Prompt text and whether the tokenizer should add special tokens itself."""
        if getattr(tok, "chat_template", None):
            try:
                return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), False
            except Exception:  # templates without a system role (Gemma, Mistral): fold it into the first turn
                merged = [{"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]},
                          *messages[2:]]
                return tok.apply_chat_template(merged, tokenize=False, add_generation_prompt=True), False
        return render_plain(messages), True

    def _complete(self, conversations: Sequence[Messages]) -> list[Reply]:
        try:
            tok, lm = self._load()
        except Exception as err:
            return [Reply(error=f"could not load {self.model}: {type(err).__name__}: {err}")] * len(conversations)
        replies: list[Reply] = []
        for start in range(0, len(conversations), self.batch_size):
            chunk = conversations[start : start + self.batch_size]
            try:
                replies.extend(Reply(text=t) for t in self._generate(tok, lm, chunk))
            except Exception as err:  # e.g. out of memory: this chunk fails, the rest still runs
                replies.extend([Reply(error=f"generation failed: {type(err).__name__}: {err}")] * len(chunk))
        return replies

    def _generate(self, tok: Any, lm: Any, chunk: Sequence[Messages]) -> list[str]:
        import torch
        from transformers import GenerationConfig

        rendered = [self._render(tok, m) for m in chunk]
        add_special = rendered[0][1]
        enc = tok([text for text, _ in rendered], return_tensors="pt", padding=True,
                  add_special_tokens=add_special).to(lm.device)
        config = GenerationConfig(
            do_sample=False,
            num_beams=1,
            max_new_tokens=self.max_new_tokens,
            pad_token_id=tok.pad_token_id,
            eos_token_id=lm.generation_config.eos_token_id if lm.generation_config.eos_token_id is not None
            else tok.eos_token_id,
        )
        with torch.inference_mode():
            out = lm.generate(**enc, generation_config=config)
        return tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
