"""``hf`` judge: a local transformers causal LM (a folder, a hub id or a ``.gguf``), in process, batched.

For machines without a judge server. By default verdicts are constrained
(:mod:`~llamavid_eval.judges.backends.constrained`): the model only chooses yes/no and a score inside a
forced reply frame, so nothing is re-asked, a reply always parses, and the probability of ``yes`` is
recorded. ``decoding="free"`` (``LLAMAVID_JUDGE_DECODING=free``) lets the model write its reply, for
models the constraint does not suit; it goes through the same parser. A ``.gguf`` file (or a folder
holding one) loads through transformers' GGUF support (:mod:`~llamavid_eval.judges.backends.gguf`).

Free decoding is greedy with an explicit generation config, so a checkpoint's own sampling defaults (Llama-3-Instruct ships temperature 0.6 / top-p 0.9, which made
the study's verdicts irreproducible) are ignored. The model loads on first use, not at
construction, so building a judge from a task YAML costs nothing until something is judged.

Throughput: every judge prompt starts with the same system text and instruction (~60% of its
tokens); that shared token prefix is run through the model once and its keys/values are copied
into every row's cache, so only each item's own tokens are prefilled (both decodings). Conversations are
sorted by length before batching (little padding), and a row stops at the first ``}`` - the
verdict dictionary is complete there - instead of running to ``max_new_tokens``. Decoding is the
video model's (``llamavid_eval.generation``): on a GPU each decode step is one replayed CUDA graph,
with no Python per token.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from llamavid_eval.core.heap import frozen_heap
from llamavid_eval.generation.attention import grouped_attention_for
from llamavid_eval.generation.decoding import GraphDecoder, LlmInputs
from llamavid_eval.generation.fusion import fuse_rms_norms
from llamavid_eval.judges.backends import constrained, gguf
from llamavid_eval.judges.cache import JudgementCache
from llamavid_eval.judges.engine import ConversationJudge, Messages, OnReply, Reply
from llamavid_eval.judges.prompt import BUILTIN, MAX_NEW_TOKENS, Prompt, render_plain


@functools.lru_cache(maxsize=1)
def _load_pretrained(path: str, device: str | None) -> tuple[Any, Any]:
    """Tokenizer and model, shared by every judge on the same folder: tasks build one judge each, and
    an 8B judge should be loaded once per process, not once per task."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if gguf.is_gguf(path):
        tok, lm = gguf.load(path, device)
    else:
        tok = AutoTokenizer.from_pretrained(path)
        # use_kernels=False: transformers >= 5.25 otherwise fetches kernels from the hub on CUDA (and fails
        # without network: "Kernel repository 'kernels-community/rotary' could not verify ..."); a judge
        # must load from local files only, and the generation layer fuses what it needs itself.
        lm = AutoModelForCausalLM.from_pretrained(path, dtype="auto", device_map=device, use_kernels=False)
    tok.padding_side = "left"  # generation continues from the right end of every row
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok, lm.eval()


DECODINGS = ("constrained", "free")


class HFJudge(ConversationJudge):
    backend = "hf"

    def __init__(
        self,
        model: str,
        *,
        batch_size: int = 256,
        device: str | None = None,
        max_new_tokens: int = MAX_NEW_TOKENS,
        cache: JudgementCache | None = None,
        parse_retries: int = 2,
        decoding: str = "constrained",
        prompt: Prompt = BUILTIN,
    ) -> None:
        if decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {', '.join(DECODINGS)}, got {decoding!r}")
        self.decoding = decoding
        super().__init__(model, cache=cache, parse_retries=parse_retries, prompt=prompt)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.device = device
        self.max_new_tokens = max_new_tokens
        self._lock = threading.Lock()
        self._tok: Any = None
        self._lm: Any = None
        self._prefix: tuple[tuple[int, ...], tuple[tuple[Any, Any], ...]] | None = None
        self._closing: list[int] | None = None
        self._decoder: GraphDecoder | None = None
        self._fused_lm: Any = None

    @classmethod
    def with_model(cls, name: str, tokenizer: Any, lm: Any, **kwargs: Any) -> HFJudge:
        """A judge around an already loaded tokenizer and model (benchmarks, notebooks); ``name``
        is what verdicts and cache keys record as the judge model."""
        judge = cls(name, **kwargs)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
        judge._tok, judge._lm = tokenizer, lm.eval()
        return judge

    @property
    def prompt(self) -> Prompt:
        """The prompt; under constrained decoding its version carries the frame's tag, so that verdicts
        (cache keys, records) of the two decodings are never mixed up."""
        if self.decoding == "constrained":
            return replace(self._prompt, version=self._prompt.version + constrained.VERSION_TAG)
        return self._prompt

    @prompt.setter
    def prompt(self, prompt: Prompt) -> None:
        self._prompt = prompt

    def close(self) -> None:
        self._tok = self._lm = self._prefix = self._closing = self._decoder = self._fused_lm = None
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
                merged = [
                    {"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]},
                    *messages[2:],
                ]
                return tok.apply_chat_template(merged, tokenize=False, add_generation_prompt=True), False
        return render_plain(messages), True

    def _complete(self, conversations: Sequence[Messages], on_reply: OnReply) -> None:
        try:
            tok, lm = self._load()
        except Exception as err:
            for index in range(len(conversations)):
                on_reply(index, Reply(error=f"could not load {self.model}: {type(err).__name__}: {err}"))
            return
        if self.decoding == "constrained":
            try:
                frames = constrained.frames(tok, [self._render(tok, messages) for messages in conversations])
            except constrained.ConstraintError as err:
                for index in range(len(conversations)):
                    on_reply(index, Reply(error=str(err)))
                return
            prompts = [frame.prefix for frame in frames]
        else:
            frames, prompts = None, self._encode(tok, conversations)
        shared = _shared_length(prompts)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths: little padding
        with frozen_heap():  # no full collection of the libraries' objects between chunks
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                replies = self._judge_chunk(tok, lm, chunk, prompts, frames, shared)
                with self.replies_together():  # the chunk's verdicts cached in one transaction, as the chunk ends
                    for index, reply in zip(chunk, replies, strict=True):
                        on_reply(index, reply)

    def _judge_chunk(
        self, tok: Any, lm: Any, chunk: list[int], prompts: list[list[int]], frames: list | None, shared: int
    ) -> list[Reply]:
        """Replies for the items at ``chunk``; a failure (e.g. out of memory) fails this chunk only."""
        try:
            if frames is not None:
                prefix = self._prefix_kv(lm, tuple(prompts[0][:shared])) if shared else None
                with grouped_attention_for(self._fused(lm).config):  # K/V read once, not copied per head
                    choices = constrained.choose(lm, [frames[i] for i in chunk], tok.pad_token_id, shared, prefix)
                return [Reply(constrained.canonical(c.verdict, c.score), metadata=c.metadata()) for c in choices]
            texts = self._generate(tok, lm, [prompts[i] for i in chunk], shared)
            return [Reply(text=text, metadata={"decoding": "free"}) for text in texts]
        except Exception as err:
            hint = (
                f" (lower LLAMAVID_JUDGE_BATCH_SIZE, now {self.batch_size})"
                if isinstance(err, torch.OutOfMemoryError)
                else ""
            )
            return [Reply(error=f"generation failed: {type(err).__name__}: {err}{hint}")] * len(chunk)

    def _ids(self, tok: Any, messages: Messages) -> list[int]:
        return self._encode(tok, [messages])[0]

    def _encode(self, tok: Any, conversations: Sequence[Messages]) -> list[list[int]]:
        """Prompt ids; the texts go to the tokenizer in one call (a fast tokenizer encodes them in parallel)."""
        return constrained.encode(tok, [self._render(tok, messages) for messages in conversations])

    def _generate(self, tok: Any, lm: Any, prompts: list[list[int]], shared: int) -> list[str]:
        """Greedy replies for one batch; the first ``shared`` ids of every prompt are the same."""
        pad = tok.pad_token_id
        width = max(len(p) for p in prompts)
        ids = torch.tensor([p[:shared] + [pad] * (width - len(p)) + p[shared:] for p in prompts], device=lm.device)
        mask = torch.tensor(
            [[1] * shared + [0] * (width - len(p)) + [1] * (len(p) - shared) for p in prompts], device=lm.device
        )
        eos = lm.generation_config.eos_token_id if lm.generation_config.eos_token_id is not None else tok.eos_token_id
        eos_ids = [eos] if isinstance(eos, int) else list(eos)
        with torch.inference_mode():
            prefix = self._prefix_kv(lm, tuple(prompts[0][:shared])) if shared else None
            inputs = LlmInputs(lm.get_input_embeddings()(ids), mask, prefix)
            rows = self._graph_decoder(lm).generate(
                inputs,
                eos_token_id=eos_ids[0],
                stop_token_ids=[*eos_ids[1:], *self._closing_ids(tok)],
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
            )
        return tok.batch_decode(rows, skip_special_tokens=True)

    def _fused(self, lm: Any) -> Any:
        """``lm`` with its RMSNorms compiled into one kernel each on a GPU (once per model): the
        8B judge's LLM stage runs 12-15% faster (benchmarks/RESULTS.md)."""
        if self._fused_lm is not lm:
            if lm.device.type == "cuda":
                fuse_rms_norms(lm)
            self._fused_lm = lm
        return lm

    def _graph_decoder(self, lm: Any) -> GraphDecoder:
        """One decoder per judge: its static caches and CUDA graphs serve every batch of the same shape.
        A verdict is ~12-25 tokens: 32 run in the graph, longer replies go on eagerly; finished
        batches are looked for every 4 tokens. Batches come sorted by length, so a cache never
        serves again once a longer one is made: one is kept (each is ~20 GB at batch 512 for an 8B
        judge). On a GPU the model's RMSNorms are compiled (in place)."""
        if self._decoder is None or self._decoder.model is not lm:
            self._decoder = GraphDecoder(
                self._fused(lm), self.batch_size, graph_tokens=32, kept_shapes=1, check_every=4
            )
        return self._decoder

    def _prefix_kv(self, lm: Any, prefix: tuple[int, ...]) -> tuple[tuple[Any, Any], ...]:
        """Per-layer keys/values of ``prefix`` (batch 1), kept while the prefix stays the same."""
        if self._prefix is None or self._prefix[0] != prefix:
            with torch.inference_mode():
                cache = lm(input_ids=torch.tensor([prefix], device=lm.device), use_cache=True).cache
            self._prefix = (prefix, tuple((layer.keys, layer.values) for layer in cache.layers))
        return self._prefix[1]

    def _closing_ids(self, tok: Any) -> list[int]:
        """Ids of the tokens whose text holds ``}`` (a reply is complete once it emits one)."""
        if self._closing is None:
            texts = tok.batch_decode([[i] for i in range(len(tok))])
            self._closing = [i for i, t in enumerate(texts) if "}" in t]
        return self._closing


def _shared_length(prompts: Sequence[list[int]]) -> int:
    """Length of the id prefix common to every prompt, leaving each prompt at least one own id."""
    if not prompts:
        return 0
    first, limit = prompts[0], min(len(p) for p in prompts) - 1
    length = 0
    while length < limit and all(p[length] == first[length] for p in prompts):
        length += 1
    return length
