"""Choosing a judge (defaults < YAML metadata < environment < flags), summarize, the exact matcher."""

from __future__ import annotations

import pytest

from llamavid_eval.judges import BACKENDS, Judgement, JudgeRequest, get_judge, resolve_settings, summarize
from llamavid_eval.judges.backends.exact import ExactMatchJudge
from llamavid_eval.judges.backends.hf import HFJudge
from llamavid_eval.judges.backends.openai_compat import LocalJudge, OpenAIJudge

pytestmark = pytest.mark.usefixtures("judge_env")


def test_defaults_are_the_papers_judge():
    s = resolve_settings(env={})
    assert (s.backend, s.model, s.base_url, s.concurrency, s.timeout, s.max_retries) == (
        "openai",
        "gpt-3.5-turbo",
        None,
        8,
        60.0,
        5,
    )
    assert s.cache.endswith("llamavid-eval/judges")


def test_config_then_env_then_overrides():
    cfg = {"judge": "local", "judge_model": "llama3", "judge_base_url": "http://h:1/v1", "version": 1}
    s = resolve_settings(cfg, env={})
    assert (s.backend, s.model, s.base_url) == ("local", "llama3", "http://h:1/v1")
    s = resolve_settings(cfg, env={"LLAMAVID_JUDGE_MODEL": "qwen", "LLAMAVID_JUDGE_CONCURRENCY": "3"})
    assert (s.backend, s.model, s.base_url, s.concurrency) == ("local", "qwen", "http://h:1/v1", 3)
    s = resolve_settings(cfg, env={"LLAMAVID_JUDGE_MODEL": "qwen"}, overrides={"model": "mistral", "timeout": 5})
    assert (s.model, s.timeout) == ("mistral", 5.0)


def test_switching_backend_by_env_drops_the_yamls_model():
    cfg = {"judge": "openai", "judge_model": "gpt-3.5-turbo-0613"}
    s = resolve_settings(cfg, env={"LLAMAVID_JUDGE": "local"})
    assert (s.backend, s.model, s.base_url) == (
        "local",
        "meta-llama/Meta-Llama-3-8B-Instruct",
        "http://127.0.0.1:8000/v1",
    )
    s = resolve_settings(cfg, env={"LLAMAVID_JUDGE": "local", "LLAMAVID_JUDGE_MODEL": "x"})
    assert s.model == "x"


def test_naming_the_same_backend_again_keeps_its_model_and_url():
    """``LLAMAVID_JUDGE=local LLAMAVID_JUDGE_BASE_URL=... llamavid judge rejudge out/ --judge local``: the flag
    names the backend already chosen, so the variables still say where and which model."""
    env = {"LLAMAVID_JUDGE": "local", "LLAMAVID_JUDGE_MODEL": "m", "LLAMAVID_JUDGE_BASE_URL": "http://h:9/v1"}
    for overrides in ({"backend": "local"}, {"backend": "Local"}):
        s = resolve_settings(None, env=env, overrides=overrides)
        assert (s.backend, s.model, s.base_url) == ("local", "m", "http://h:9/v1")
    s = resolve_settings(None, env=env, overrides={"backend": "local", "model": "other"})
    assert (s.model, s.base_url) == ("other", "http://h:9/v1")
    # variables given with no backend follow the one the flag chooses
    s = resolve_settings(None, env={"LLAMAVID_JUDGE_BASE_URL": "http://h:9/v1"}, overrides={"backend": "local"})
    assert (s.backend, s.base_url) == ("local", "http://h:9/v1")
    # another backend than the variables' drops them
    s = resolve_settings(None, env=env, overrides={"backend": "openai"})
    assert (s.backend, s.model, s.base_url) == ("openai", "gpt-3.5-turbo", None)


def test_one_env_var_switches_the_judge(monkeypatch):
    monkeypatch.setenv("LLAMAVID_JUDGE", "exact")
    judge = get_judge({"judge": "openai"})
    assert isinstance(judge, ExactMatchJudge) and judge.name == "exact-match"
    monkeypatch.setenv("LLAMAVID_JUDGE", "local")
    judge = get_judge({"judge": "openai"})
    assert isinstance(judge, LocalJudge) and judge.base_url == "http://127.0.0.1:8000/v1"
    monkeypatch.setenv("LLAMAVID_JUDGE", "hf")
    monkeypatch.setenv("LLAMAVID_JUDGE_MODEL", "/models/judge")
    judge = get_judge(None)
    assert isinstance(judge, HFJudge) and judge.model == "/models/judge" and judge._lm is None  # loads lazily


def test_openai_needs_a_key(monkeypatch):
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        get_judge()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-abcdefgh")
    judge = get_judge()
    assert isinstance(judge, OpenAIJudge) and judge.model == "gpt-3.5-turbo" and "sk-abc" not in repr(judge)


@pytest.mark.parametrize(
    ("config", "env", "message"),
    [
        ({"judge": "gpt4"}, {}, "unknown judge backend 'gpt4'; valid: openai, local, hf, exact"),
        ({}, {"LLAMAVID_JUDGE": "claude"}, "valid: openai, local, hf, exact"),
        ({"judge_modle": "x"}, {}, "unknown judge option(s) judge_modle in config; valid: judge, judge_model"),
        (
            {},
            {"LLAMAVID_JUDGE_MODLE": "x"},
            "unknown environment variable(s) LLAMAVID_JUDGE_MODLE; valid: LLAMAVID_JUDGE,",
        ),
        ({}, {"LLAMAVID_JUDGE_CONCURRENCY": "many"}, "LLAMAVID_JUDGE_CONCURRENCY / judge_concurrency must be int"),
        ({}, {"LLAMAVID_JUDGE_CONCURRENCY": "0"}, "out of range"),
        ({"judge_response_format": "xml"}, {}, "valid: auto, json_schema, json_object, none"),
    ],
)
def test_unknown_values_name_the_valid_ones(config, env, message):
    with pytest.raises(ValueError) as info:
        resolve_settings(config, env=env)
    assert message in str(info.value)


def test_overrides_reject_unknown_options():
    with pytest.raises(ValueError, match="unknown judge option"):
        resolve_settings(env={}, overrides={"temperature": 0.7})


def test_cache_off(monkeypatch):
    monkeypatch.setenv("LLAMAVID_JUDGE", "local")
    monkeypatch.setenv("LLAMAVID_JUDGE_CACHE", "off")
    assert get_judge().cache is None


def test_public_settings_hide_url_credentials():
    s = resolve_settings({"judge": "local", "judge_base_url": "http://user:pw-secret@h:9/v1"}, env={})
    assert s.public()["base_url"] == "http://h:9/v1"


def j(verdict, score, failed=False):
    if failed:
        return Judgement.failure("x", backend="local", model="m")
    return Judgement(verdict, score, "", "local", "m")


def test_summarize_excludes_failures_but_counts_them():
    out = summarize([j(True, 5), j(False, 1), j(True, 4), j(None, None, failed=True)])
    assert out == {
        "n": 4,
        "accuracy": pytest.approx(200 / 3),
        "mean_score": pytest.approx(10 / 3),
        "failures": 1,
        "judge": "local:m",
    }
    assert summarize([]) == {"n": 0, "accuracy": None, "mean_score": None, "failures": 0, "judge": None}
    assert summarize([j(None, None, failed=True)])["accuracy"] is None


def test_exact_match_is_offline_and_labelled():
    judge = ExactMatchJudge()
    out = judge.judge_many(
        [
            JudgeRequest("q", "A dog.", "I see the DOG running!"),
            JudgeRequest("q", "man", "a woman"),
            JudgeRequest("q", "red car", "the car is red"),
            JudgeRequest("q", "red car", "a red bus"),
            JudgeRequest("q", "...", "anything"),
        ]
    )
    assert [(x.verdict, x.score, x.failed) for x in out] == [
        (True, 5, False),
        (False, 0, False),
        (True, 5, False),
        (False, 0, False),
        (None, None, True),
    ]
    assert summarize(out)["judge"] == "exact-match" and judge.name == "exact-match"
    assert set(BACKENDS) == {"openai", "local", "hf", "exact"}


def test_task_metadata_names_the_judge_the_environment_chose_and_resolves_to_it_again():
    from llamavid_eval.judges.factory import task_metadata

    yaml = {"judge": "openai", "judge_model": "gpt-3.5-turbo", "version": 1}
    env = {"LLAMAVID_JUDGE": "local", "LLAMAVID_JUDGE_MODEL": "smol", "LLAMAVID_JUDGE_BASE_URL": "http://h:1/v1"}
    settings = resolve_settings(yaml, env=env)
    meta = task_metadata(settings, env=env)
    assert (meta["judge"], meta["judge_model"], meta["judge_base_url"]) == ("local", "smol", "http://h:1/v1")
    assert resolve_settings({**yaml, **meta}, env=env) == settings  # the aggregation builds the same judge
    secret = resolve_settings({"judge": "local", "judge_base_url": "http://u:pw@h:1/v1"}, env={})
    assert "judge_base_url" not in task_metadata(secret, env={})  # never written masked where it is read back
