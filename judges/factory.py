"""Choose and build a judge from defaults, a task's YAML ``metadata`` and environment variables.

Precedence, lowest to highest: built-in defaults < ``config`` (a task YAML's ``metadata``: keys
``judge``, ``judge_model``, ``judge_base_url``, ...) < environment (``LLAMAVID_JUDGE`` ...) <
``overrides`` (command-line flags of ``llamavid judge``). Switching the judge of an lmms-eval run
is one variable: ``LLAMAVID_JUDGE=local lmms-eval ...``.

A model or base URL belongs to the backend chosen next to it: when a higher layer switches to another
backend, a model or URL named by a lower layer is dropped (the new backend's default applies), so the
YAML's ``judge_model: gpt-3.5-turbo`` is never sent to a local server; a layer that names the same
backend again, or the first to name one, keeps them (``LLAMAVID_JUDGE_BASE_URL=... llamavid judge
rejudge out/ --judge local``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from llamavid_eval.core.scores import DEFAULT_MAX_FAILURE_RATE, MAX_FAILURE_RATE_ENV
from llamavid_eval.judges.base import Judge
from llamavid_eval.judges.cache import DEFAULT_CACHE_DIR, JudgementCache
from llamavid_eval.judges.prompt import load_prompt

BACKENDS = ("openai", "local", "hf", "exact")
DEFAULT_MODELS = {
    "openai": "gpt-3.5-turbo",
    "local": "meta-llama/Meta-Llama-3-8B-Instruct",
    "hf": "meta-llama/Meta-Llama-3-8B-Instruct",
    "exact": "exact-match",
}
DEFAULT_BASE_URLS = {"local": "http://127.0.0.1:8000/v1"}
# Requests in flight (the ceiling of the adaptive limit): a local server batches what it is sent, so it
# gets far more than the OpenAI API, whose rate limits depend on the account.
DEFAULT_CONCURRENCY = {"openai": 8, "local": 64}
_CACHE_OFF = ("", "0", "off", "none", "false", "no")
_TRUE, _FALSE = ("1", "on", "true", "yes"), ("0", "off", "false", "no")


def _flag(value: Any) -> bool:
    """A yes/no option from YAML (bool) or the environment (1/0, on/off, true/false, yes/no)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(f"not a yes/no value: {value!r}")


# option -> (config key, environment variable, parser)
OPTIONS: dict[str, tuple[str, str, Any]] = {
    "backend": ("judge", "LLAMAVID_JUDGE", str),
    "model": ("judge_model", "LLAMAVID_JUDGE_MODEL", str),
    "base_url": ("judge_base_url", "LLAMAVID_JUDGE_BASE_URL", str),
    "concurrency": ("judge_concurrency", "LLAMAVID_JUDGE_CONCURRENCY", int),
    "timeout": ("judge_timeout", "LLAMAVID_JUDGE_TIMEOUT", float),
    "max_retries": ("judge_max_retries", "LLAMAVID_JUDGE_MAX_RETRIES", int),
    "parse_retries": ("judge_parse_retries", "LLAMAVID_JUDGE_PARSE_RETRIES", int),
    "response_format": ("judge_response_format", "LLAMAVID_JUDGE_RESPONSE_FORMAT", str),
    "batch_size": ("judge_batch_size", "LLAMAVID_JUDGE_BATCH_SIZE", int),
    "cache": ("judge_cache", "LLAMAVID_JUDGE_CACHE", str),
    "preflight": ("judge_preflight", "LLAMAVID_JUDGE_PREFLIGHT", _flag),
    "prompt": ("judge_prompt", "LLAMAVID_JUDGE_PROMPT", str),
    "exam": ("judge_exam", "LLAMAVID_JUDGE_EXAM", _flag),
    "max_failure_rate": ("judge_max_failure_rate", MAX_FAILURE_RATE_ENV, float),
    "decoding": ("judge_decoding", "LLAMAVID_JUDGE_DECODING", str),
}
#: Read by the ``local`` backend only (the OpenAI key is never sent to a local server).
API_KEY_ENV = "LLAMAVID_JUDGE_API_KEY"
ENV_VARS = tuple(env for _, env, _ in OPTIONS.values()) + (API_KEY_ENV,)


@dataclass(frozen=True)
class JudgeSettings:
    """Everything that decides a judge except secrets - safe to log and to write into result files."""

    backend: str = "openai"
    model: str | None = None
    base_url: str | None = None
    concurrency: int | None = None  # None: DEFAULT_CONCURRENCY of the backend
    timeout: float = 60.0
    max_retries: int = 5
    parse_retries: int = 2
    response_format: str = "auto"
    # hf judge, items per batch. An 8B judge on an H200, built-in prompt: 278 judgements/s at 256 (27 GiB
    # peak), 257 at 512 (39 GiB) - record 20261204T181028Z_judge_throughput in benchmarks/results/
    batch_size: int = 256
    cache: str = str(DEFAULT_CACHE_DIR)
    preflight: bool = True  # check the judge when a task is built (judges.preflight); off to judge later
    prompt: str = ""  # a judge prompt file (judges.prompt); "": the built-in prompt
    exam: bool = True  # examine the judge before its verdicts count (judges.exam); off: records say so
    max_failure_rate: float = DEFAULT_MAX_FAILURE_RATE  # share of failed items above which judged metrics are NaN
    decoding: str = "constrained"  # hf judge: choose yes/no and a score in a forced frame; "free": write a reply

    def public(self) -> dict[str, Any]:
        from llamavid_eval.judges.backends.openai_compat import safe_url

        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["base_url"] = safe_url(self.base_url)
        return data


def task_metadata(settings: JudgeSettings, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The judge ``settings`` resolved to as a task YAML's ``metadata`` keys (``judge``, ``judge_model``, ...).

    lmms-eval writes a task's metadata into ``results.json``; a task overwrites its YAML's judge keys with
    these, so the file names the judge that was used, not ``judge: openai`` when ``LLAMAVID_JUDGE`` chose
    another. Resolving them again (same environment) gives the same judge. A base URL holding credentials
    is written masked only when the environment names it (the environment wins when the task judges)."""
    env = os.environ if env is None else env
    public = settings.public()
    keys = {opt: key for opt, (key, _, _) in OPTIONS.items()}
    meta = {keys[opt]: value for opt, value in public.items() if opt in keys and value is not None}
    if public["base_url"] != settings.base_url and not env.get(OPTIONS["base_url"][1]):
        meta.pop(keys["base_url"], None)
    found = remembered_format(settings)
    if found is not None and found[2]:  # the model name the server answers under (judges.preflight)
        meta["served_judge_model"] = found[2]
    return meta


def resolve_settings(
    config: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> JudgeSettings:
    """Merge the layers (see module docstring); raise ``ValueError`` for anything unknown."""
    env = os.environ if env is None else env
    unknown_env = sorted(k for k in env if k.startswith("LLAMAVID_JUDGE") and k not in ENV_VARS)
    if unknown_env:
        raise ValueError(f"unknown environment variable(s) {', '.join(unknown_env)}; valid: {', '.join(ENV_VARS)}")
    config_keys = {key: opt for opt, (key, _, _) in OPTIONS.items()}
    layers: list[dict[str, Any]] = []
    cfg = {k: v for k, v in (config or {}).items() if str(k).startswith("judge")}
    bad = sorted(k for k in cfg if k not in config_keys)
    if bad:
        raise ValueError(f"unknown judge option(s) {', '.join(bad)} in config; valid: {', '.join(config_keys)}")
    layers.append({config_keys[k]: v for k, v in cfg.items() if v is not None})
    layers.append({opt: env[e] for opt, (_, e, _) in OPTIONS.items() if env.get(e, "") != ""})
    over = {k: v for k, v in (overrides or {}).items() if v is not None}
    bad = sorted(k for k in over if k not in OPTIONS)
    if bad:
        raise ValueError(f"unknown judge option(s) {', '.join(bad)}; valid: {', '.join(OPTIONS)}")
    layers.append(over)

    merged: dict[str, Any] = {}
    for layer in layers:
        chosen = merged.get("backend")  # None: no layer below named one, so a model or URL follows any backend
        if "backend" in layer and chosen is not None and _backend_name(layer["backend"]) != _backend_name(chosen):
            merged.pop("model", None)  # they belong to the backend this layer replaces
            merged.pop("base_url", None)
        merged.update({opt: _convert(opt, value) for opt, value in layer.items()})
    backend = _backend_name(merged.get("backend"))
    if backend not in BACKENDS:
        raise ValueError(f"unknown judge backend {backend!r}; valid: {', '.join(BACKENDS)}")
    merged["backend"] = backend
    merged.setdefault("model", DEFAULT_MODELS[backend])
    if backend == "openai" and not merged.get("base_url") and env.get("OPENAI_BASE_URL"):
        merged["base_url"] = env["OPENAI_BASE_URL"]  # the openai client would send there: records must say so
    merged.setdefault("base_url", DEFAULT_BASE_URLS.get(backend))
    merged.setdefault("concurrency", DEFAULT_CONCURRENCY.get(backend))
    from llamavid_eval.judges.backends.openai_compat import RESPONSE_FORMAT_CHOICES

    if merged.get("response_format", "auto") not in RESPONSE_FORMAT_CHOICES:
        raise ValueError(
            f"unknown response_format {merged['response_format']!r}; valid: {', '.join(RESPONSE_FORMAT_CHOICES)}"
        )
    if "decoding" in merged:  # only then: the hf backend imports torch
        from llamavid_eval.judges.backends.hf import DECODINGS

        if merged["decoding"] not in DECODINGS:
            raise ValueError(f"unknown decoding {merged['decoding']!r}; valid: {', '.join(DECODINGS)}")
    return JudgeSettings(**merged)


def _backend_name(value: Any) -> str:
    """``LLAMAVID_JUDGE=Local`` and ``local`` name one backend; unset is the default one."""
    return str(JudgeSettings.backend if value is None else value).strip().lower()


def _convert(opt: str, value: Any) -> Any:
    key, env_name, kind = OPTIONS[opt]
    try:
        converted = kind(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        expected = "yes/no (1/0, on/off, true/false)" if kind is _flag else kind.__name__
        raise ValueError(f"{env_name} / {key} must be {expected}, got {value!r}") from None
    if kind is float and not math.isfinite(converted):
        raise ValueError(f"{env_name} / {key} must be a finite number, got {value!r}")
    if opt == "max_failure_rate" and converted > 1:
        raise ValueError(f"{env_name} / {key} is a share between 0 and 1 (e.g. 0.05), got {value!r}")
    if opt == "timeout" and converted <= 0:
        raise ValueError(f"{env_name} / {key} is seconds per request, more than 0: {value!r}")
    if kind in (int, float) and converted < (1 if opt in ("concurrency", "batch_size") else 0):
        raise ValueError(f"{env_name} / {key} is out of range: {value!r}")
    return converted


def cache_for(settings: JudgeSettings) -> JudgementCache | None:
    if settings.cache.strip().lower() in _CACHE_OFF:
        return None
    return JudgementCache(Path(settings.cache).expanduser())


def build_judge(settings: JudgeSettings, env: Mapping[str, str] | None = None) -> Judge:
    """The judge ``settings`` describe; API keys are read from ``env`` here and nowhere else."""
    env = os.environ if env is None else env
    model = settings.model or DEFAULT_MODELS[settings.backend]
    if settings.backend == "exact":
        from llamavid_eval.judges.backends.exact import ExactMatchJudge

        return ExactMatchJudge()
    if settings.backend == "hf":
        from llamavid_eval.judges.backends.hf import HFJudge

        hf = HFJudge(
            model,
            batch_size=settings.batch_size,
            cache=cache_for(settings),
            parse_retries=settings.parse_retries,
            decoding=settings.decoding,
        )
        hf.prompt = load_prompt(settings.prompt)
        return hf
    from llamavid_eval.judges.backends.openai_compat import LocalJudge, OpenAIJudge

    common: dict[str, Any] = dict(
        base_url=settings.base_url,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
        concurrency=settings.concurrency,
        response_format=settings.response_format,
        cache=cache_for(settings),
        parse_retries=settings.parse_retries,
    )
    if settings.backend == "openai":
        key = env.get("OPENAI_API_KEY", "")
        if not key:
            raise ValueError(
                "the 'openai' judge needs OPENAI_API_KEY in the environment; or choose another "
                f"judge with LLAMAVID_JUDGE ({', '.join(BACKENDS)})"
            )
        judge: OpenAIJudge | LocalJudge = OpenAIJudge(model, api_key=key, **common)
    else:
        judge = LocalJudge(model, api_key=env.get(API_KEY_ENV) or "EMPTY", **common)
    judge.prompt = load_prompt(settings.prompt)
    found = remembered_format(settings)
    if found is not None:  # the preflight of this process already found what the server honours
        fmt, note, judge.served_model = found  # and the model name it answers under (warned about there)
        if settings.response_format == "auto":
            judge.use_format(fmt, note)
    return judge


# (backend, base URL without credentials, model) -> (response format, note, model name the server answers
# under or None) found by a preflight (judges.preflight writes it; kept here so that build_judge reads it
# without importing the preflight)
REMEMBERED_FORMATS: dict[tuple[str, str | None, str | None], tuple[str, str | None, str | None]] = {}


def format_key(settings: JudgeSettings) -> tuple[str, str | None, str | None]:
    from llamavid_eval.judges.backends.openai_compat import safe_url

    return settings.backend, safe_url(settings.base_url), settings.model


def remembered_format(settings: JudgeSettings) -> tuple[str, str | None, str | None] | None:
    """The response format, a note and the served model name a preflight of this process found, if any."""
    return REMEMBERED_FORMATS.get(format_key(settings))


def get_judge(config: Mapping[str, Any] | None = None, *, overrides: Mapping[str, Any] | None = None) -> Judge:
    """The judge for a task: ``config`` is its YAML ``metadata`` (or ``None``); see module docstring."""
    return build_judge(resolve_settings(config, overrides=overrides))
