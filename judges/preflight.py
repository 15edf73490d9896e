"""Check a judge once, before the video model runs, and stop the run with one clear message if it cannot work.

Judging happens at aggregation time, after all of the GPU work; a judge that is down, a rejected
key or a model the server does not serve would otherwise surface hours later, item by item, after
retries. The preflight asks the server directly, without retries and with a short timeout: the model
list (``GET /models``, where the server has one), then one tiny judgement, stepping down the response
formats until a reply parses. The format found is remembered for this process (keyed by backend, URL
and model), so the judge rebuilt at aggregation time starts with it and never pays for the fallback.
The in-process ``hf`` judge has no server: its check loads the model's config and tokenizer (seconds;
the weights load when it first judges), so a wrong path stops the run before the video model starts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import openai

from llamavid_eval.judges.backends import gguf
from llamavid_eval.judges.backends.openai_compat import OpenAICompatibleJudge, is_json_object, safe_url
from llamavid_eval.judges.base import JudgeRequest
from llamavid_eval.judges.cache import CacheError
from llamavid_eval.judges.factory import (
    BACKENDS,
    DEFAULT_MODELS,
    REMEMBERED_FORMATS,
    JudgeSettings,
    build_judge,
    cache_for,
    format_key,
    remembered_format,
)
from llamavid_eval.judges.flow import Kind, classify
from llamavid_eval.judges.prompt import ParseError, PromptError, parse_reply

log = logging.getLogger("judges")

TIMEOUT = 15.0  # seconds per preflight request at most: a judge that needs longer for one tiny item is unusable
PROBE = JudgeRequest("What colour is the sky in the video?", "blue", "The sky is blue.")
_PAPER_JUDGE_NOTE = (
    "Note: the paper's judge gpt-3.5-turbo is reported shut down by OpenAI on 2026-10-23 (the deprecation "
    "notices name gpt-4.1-mini as its substitute); keep the paper's numbers as reported rows and calibrate "
    "the replacement with `llamavid judge swap`."
)


class JudgeUnavailable(RuntimeError):
    """The judge cannot work; the message names backend, URL, model, the server's reason and the fix."""


@dataclass(frozen=True)
class PreflightReport:
    """What the preflight found: the models the server lists (None: no list) and the format to use."""

    backend: str
    base_url: str | None
    model: str
    served_models: tuple[str, ...] | None
    response_format: str
    format_note: str | None
    seconds: float
    served_model: str | None = None  # the name the server answered under, where it differs from ``model``

    def summary(self) -> str:
        if self.backend == "hf":
            return (
                f"judge hf:{self.model}: config and tokenizer load (the weights load when it first judges); "
                f"checked in {self.seconds:.1f} s"
            )
        note = f" ({self.format_note})" if self.format_note else ""
        served = (
            f" as model {self.served_model!r} (verdicts are labelled so; the server may ignore the name asked for)"
            if self.served_model
            else ""
        )
        return (
            f"judge {self.backend}:{self.model} at {self.base_url or 'the OpenAI API'} answers{served}; "
            f"response format {self.response_format}{note}; checked in {self.seconds:.1f} s"
        )


def preflight(settings: JudgeSettings, env: Mapping[str, str] | None = None) -> PreflightReport | None:
    """Check the judge ``settings`` describe; raise :class:`JudgeUnavailable` if it cannot work.

    Returns None for the ``exact`` judge, which needs nothing.
    """
    if settings.backend not in ("openai", "local", "hf"):
        return None
    check_cache(settings)
    if settings.backend == "hf":
        return _check_in_process(settings)
    start = time.monotonic()
    REMEMBERED_FORMATS.pop(format_key(settings), None)  # check afresh: the server may have changed since
    try:
        judge = build_judge(settings, env)
    except PromptError as err:
        raise JudgeUnavailable(_message(settings, str(err), None, first=_PROMPT_FIX)) from None
    except ValueError as err:  # no API key, an option out of range: the settings, not the server
        fix = None if "API_KEY" in str(err) else _SETTINGS_FIX  # None: the fix for Kind.AUTH, which names the key
        raise JudgeUnavailable(_message(settings, str(err), None, Kind.AUTH, fix)) from None
    assert isinstance(judge, OpenAICompatibleJudge)
    try:
        timeout = min(judge.timeout, TIMEOUT)
        served = _served_models(judge, settings, timeout)
        fmt, note, served_as = _find_format(judge, settings, timeout, served)
    finally:
        judge.close()
    served_as = served_as if served_as != judge.model else None
    REMEMBERED_FORMATS[format_key(settings)] = (fmt, note, served_as)
    report = PreflightReport(
        settings.backend,
        safe_url(settings.base_url),
        judge.model,
        served,
        fmt,
        note,
        time.monotonic() - start,
        served_as,
    )
    log.info("%s", report.summary())
    return report


def check_cache(settings: JudgeSettings) -> None:
    """The judge cache folder can be written (else the verdicts of a whole run would fail at aggregation)."""
    cache = cache_for(settings)
    try:
        if cache is not None:
            cache.check()
    except CacheError as err:
        raise JudgeUnavailable(_message(settings, str(err), None, first=_CACHE_FIX)) from None


def _check_in_process(settings: JudgeSettings) -> PreflightReport:
    """The ``hf`` judge's config and tokenizer load (from local files) and describe a causal language model."""
    from transformers import AutoConfig, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    start = time.monotonic()
    model = settings.model or DEFAULT_MODELS["hf"]
    if gguf.is_gguf(model):  # a .gguf holds no config.json: its own check (headers only)
        try:
            log.info("judge hf: %s", gguf.check(model))
        except (ValueError, FileNotFoundError) as err:  # GGUFError, several .gguf files, no file
            raise JudgeUnavailable(_message(settings, str(err), None, first=_IN_PROCESS_FIX)) from None
        return _in_process_ok(settings, model, start)
    try:
        config = AutoConfig.from_pretrained(model, local_files_only=True)
        AutoTokenizer.from_pretrained(model, local_files_only=True)
    except Exception as err:  # OSError (no such folder or repository), ValueError (unknown model type), ...
        reason = f"cannot load its config and tokenizer: {type(err).__name__}: {str(err)[:400]}"
        raise JudgeUnavailable(_message(settings, reason, None, first=_IN_PROCESS_FIX)) from None
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        reason = f"its config is a {config.model_type!r} model, which transformers cannot load as a causal LM"
        raise JudgeUnavailable(_message(settings, reason, None, first=_IN_PROCESS_FIX))
    return _in_process_ok(settings, model, start)


def _in_process_ok(settings: JudgeSettings, model: str, start: float) -> PreflightReport:
    REMEMBERED_FORMATS[format_key(settings)] = ("text", None, None)
    report = PreflightReport("hf", None, model, None, "text", None, time.monotonic() - start)
    log.info("%s", report.summary())
    return report


def _served_models(judge: OpenAICompatibleJudge, settings: JudgeSettings, timeout: float) -> tuple[str, ...] | None:
    try:
        models = tuple(judge.served_models(timeout))
    except openai.APIError as err:
        info = classify(err, sent_format=False, redact=judge.redact)
        if info.kind in (Kind.CONNECTION, Kind.AUTH, Kind.FORBIDDEN, Kind.QUOTA, Kind.TRANSIENT):
            raise JudgeUnavailable(_message(settings, judge.redact(info.reason), None, info.kind)) from None
        return None  # no usable model list (404, 405): the tiny judgement decides
    except (TypeError, AttributeError, ValueError) as err:  # a body that is not OpenAI's model list
        log.info("judge %s: GET /models gave no usable list (%s); the tiny judgement decides", judge.name, err)
        return None
    if judge.model not in models:
        log.warning(
            "judge %s: the server does not list model %r (it lists %s); trying it anyway",
            judge.name,
            judge.model,
            _listing(models),
        )
    return models


def _find_format(
    judge: OpenAICompatibleJudge, settings: JudgeSettings, timeout: float, served: tuple[str, ...] | None
) -> tuple[str, str | None, str | None]:
    """Step down the judge's response formats until the tiny judgement parses; detect an ignored format.
    Returns the format, a note, and the model name the server answered under."""
    messages = judge.prompt.messages(PROBE)  # the wording the run will send
    formats = judge.formats_to_try
    tried: list[str] = []
    for fmt in formats:
        try:
            reply = judge.probe(messages, fmt, timeout)
        except (ValueError, TypeError, AttributeError) as err:  # a 200 whose body is no chat completion
            reason = f"its reply is not an OpenAI chat completion ({type(err).__name__}: {str(err)[:200]})"
            raise JudgeUnavailable(_message(settings, judge.redact(reason), served, first=_NOT_OPENAI_FIX)) from None
        except openai.APIError as err:
            info = classify(err, sent_format=fmt != "none", redact=judge.redact)
            if info.kind in (Kind.FORMAT, Kind.BAD_REQUEST) and fmt != formats[-1]:
                tried.append(f"{fmt} rejected ({judge.redact(info.reason)})")
                continue
            raise JudgeUnavailable(_message(settings, judge.redact(info.reason), served, info.kind)) from None
        text = judge.redact(reply.text)
        cut = " (cut at the token limit)" if reply.finish_reason == "length" else ""
        try:
            parse_reply(text)
        except ParseError as err:
            tried.append(f"{fmt}: reply {text[:120]!r}{cut} does not parse ({err.reason})")
            continue
        if fmt != "none" and not is_json_object(text):
            note = f"the server ignores response_format: {fmt} was sent and a non-JSON reply came back"
            return "none", note, reply.model
        return fmt, ("; ".join(tried) or None), reply.model
    reason = "no response format gave a verdict that parses: " + "; ".join(tried)
    raise JudgeUnavailable(_message(settings, reason, served, Kind.FORMAT))


def _listing(models: tuple[str, ...], limit: int = 20) -> str:
    if not models:
        return "no models"
    more = f" (+{len(models) - limit} more)" if len(models) > limit else ""
    return ", ".join(models[:limit]) + more


_FIRST_FIX = {  # what to try first, by what went wrong; the ways around the judge follow in every case
    Kind.CONNECTION: "start the judge server or point LLAMAVID_JUDGE_BASE_URL (--base-url) at it",
    Kind.TRANSIENT: "check that the judge server is up and not overloaded (the reason above says what it did)",
    Kind.AUTH: "set the key: OPENAI_API_KEY for openai, LLAMAVID_JUDGE_API_KEY for a local server",
    Kind.FORBIDDEN: "use a key or account that may call this model",
    Kind.QUOTA: "add quota to the account, or use another key",
    Kind.MODEL: "pick a model the server serves with LLAMAVID_JUDGE_MODEL (--judge-model)",
    Kind.FORMAT: "pick a model whose replies follow the judge prompt (LLAMAVID_JUDGE_MODEL / --judge-model)",
}
_PROMPT_FIX = "fix the prompt file named above (LLAMAVID_JUDGE_PROMPT / --judge-prompt), or unset it for ours"
_SETTINGS_FIX = "fix the judge setting named above (its LLAMAVID_JUDGE_* variable or the command's option)"
_CACHE_FIX = "point LLAMAVID_JUDGE_CACHE (--cache) at a folder you can write, or set it to off"
_NOT_OPENAI_FIX = "point LLAMAVID_JUDGE_BASE_URL (--base-url) at an OpenAI-compatible server's /v1 address"
_IN_PROCESS_FIX = (
    "point LLAMAVID_JUDGE_MODEL (--judge-model; hf:<path> in a judge spec) at a folder (or a hub name already in "
    "the local cache) holding a transformers causal LM: "
    "config.json, tokenizer files and weights; or at a .gguf file"
)


def _message(
    settings: JudgeSettings,
    reason: str,
    served: tuple[str, ...] | None,
    kind: Kind | None = None,
    first: str | None = None,
) -> str:
    """One message: which judge, the server's reason, what it serves, and how to go on (``first``, else
    the first fix for ``kind``)."""
    url = safe_url(settings.base_url) or "https://api.openai.com/v1"
    where = f", URL {url}" if settings.backend in ("openai", "local") else ""
    lines = [f"The judge cannot work: backend {settings.backend!r}{where}, model {settings.model!r}: {reason}"]
    if served is not None:
        lines.append(f"The server serves: {_listing(served)}.")
    others = ", ".join(b for b in BACKENDS if b != settings.backend)
    first = first or _FIRST_FIX.get(kind, _FIRST_FIX[Kind.CONNECTION])  # type: ignore[arg-type]
    lines.append(
        f"Fix: {first}; or another judge with LLAMAVID_JUDGE=... ({others}) and calibrate the replacement with "
        "`llamavid judge swap`; or, in an lmms-eval run, skip this check with LLAMAVID_JUDGE_PREFLIGHT=0 and "
        "judge later with `llamavid judge rejudge`."
    )
    if str(settings.model).startswith("gpt-3.5-turbo"):
        lines.append(_PAPER_JUDGE_NOTE)
    return "\n".join(lines)


def check_once(settings: JudgeSettings, env: Mapping[str, str] | None = None) -> PreflightReport | None:
    """:func:`preflight` unless switched off (``LLAMAVID_JUDGE_PREFLIGHT=0``) or already passed in this process."""
    if not settings.preflight:
        log.warning(
            "judge %s:%s not checked (preflight off): failures will show only when judging",
            settings.backend,
            settings.model,
        )
        return None
    if remembered_format(settings) is not None:
        return None
    return preflight(settings, env)
