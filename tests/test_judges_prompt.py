"""The judge prompt as configuration: prompt files, their validation, their version in cache keys and records,
and a swap spec that carries a prompt ("same model, two prompts" in one command)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_judges_swap import runs_folder

from llamavid_eval.judges import JudgeRequest, resolve_settings
from llamavid_eval.judges.__main__ import main
from llamavid_eval.judges.cache import JudgementCache, cache_key
from llamavid_eval.judges.factory import build_judge
from llamavid_eval.judges.prompt import BUILTIN, PROMPT_VERSION, PromptError, load_prompt
from llamavid_eval.judges.swap import parse_judges, parse_spec
from llamavid_eval.judges.testing import FakeChatServer, word_judge

REQ = JudgeRequest("What is the man doing?", "running", "He runs.")
USER = "Q: {question}\nCorrect Answer: {answer}\nPredicted Answer: {prediction}\nReply {{'pred': 'yes', 'score': 5}}."


@pytest.fixture(autouse=True)
def clean_env(judge_env):
    judge_env.setenv("LLAMAVID_JUDGE_MAX_RETRIES", "0")


def write_prompt(path: Path, system: str = "You grade answers.", user: str = USER, **extra) -> Path:
    path.write_text(json.dumps({"system": system, "user": user, **extra}), encoding="utf-8")
    return path


def test_builtin_prompt_keeps_its_version_so_old_caches_stay_valid():
    assert load_prompt(None) is BUILTIN and load_prompt("") is BUILTIN
    assert BUILTIN.version == PROMPT_VERSION == "vcgpt-qa-v1" and BUILTIN.builtin
    assert cache_key("local", "m", REQ) == cache_key("local", "m", REQ, "vcgpt-qa-v1")


def test_a_prompt_file_is_versioned_by_its_content(tmp_path):
    as_json = load_prompt(write_prompt(tmp_path / "p.json"))
    as_yaml_path = tmp_path / "p.yaml"
    as_yaml_path.write_text(f"# our wording\nsystem: You grade answers.\nuser: {json.dumps(USER)}\n", encoding="utf-8")
    as_yaml = load_prompt(as_yaml_path)
    assert as_json.version == as_yaml.version and as_json.version.startswith("prompt-")
    assert as_json.version != BUILTIN.version and not as_json.builtin
    reworded = load_prompt(write_prompt(tmp_path / "q.json", system="You grade answers strictly."))
    assert reworded.version != as_json.version
    messages = as_json.messages(REQ)
    assert messages[0] == {"role": "system", "content": "You grade answers."}
    assert "Predicted Answer: He runs.\nReply {'pred': 'yes', 'score': 5}." in messages[1]["content"]
    assert "could not be read (bad)" in as_json.reask_messages(messages, "x", "bad")[-1]["content"]  # default re-ask


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"system": "s", "user": USER, "temperature": 0}, "unknown key(s) temperature; valid: system, user, reask"),
        ({"user": USER}, "missing key(s) system"),
        ({"system": "s", "user": "Q: {question} A: {answer}"}, "'user' lacks placeholder(s) {prediction}"),
        ({"system": "s", "user": USER + " {video}"}, "'user' has unknown placeholder(s) {video}"),
        ({"system": "Reply {'pred': 'yes'}", "user": USER}, "'system' has unknown placeholder(s) {'pred'}"),
        ({"system": "s", "user": USER + " {"}, "'user' is not a valid template"),
        ({"system": "s", "user": USER, "reask": "Again: {why}"}, "'reask' has unknown placeholder(s) {why}"),
        ({"system": "", "user": USER}, "'system' must be a non-empty text"),
    ],
)
def test_bad_prompt_files_are_refused_with_the_part_and_the_fix(tmp_path, content, message):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(content), encoding="utf-8")
    with pytest.raises(PromptError) as caught:
        load_prompt(path)
    assert message in str(caught.value) and str(path) in str(caught.value)


def test_missing_prompt_file_names_the_path_and_the_shipped_prompts(tmp_path):
    with pytest.raises(PromptError, match="cannot read it") as caught:
        load_prompt(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in str(caught.value) and "instructions-first" in str(caught.value)


def test_the_shipped_instructions_first_prompt_is_ours_reordered(tmp_path, monkeypatch):
    """Same criteria and reply format as the built-in prompt, every fixed text before the item."""
    first = load_prompt("instructions-first")
    # its version is the hash of its texts; the benchmark records of 2026-12-05 name this one
    assert (
        first.version == "prompt-141fb2354b2a"
        and not first.builtin
        and first.describe().endswith("instructions-first)")
    )
    assert first.system.startswith(BUILTIN.system + "\nReply with only a Python dictionary")
    system, user = first.messages(REQ)
    tail = BUILTIN.user.split("Predicted Answer: {prediction}\n")[1].format()  # the built-in's reply instructions
    assert system["content"].endswith(tail) and user["content"].endswith("Predicted Answer: He runs.")
    assert user["content"].startswith(BUILTIN.user.split("{question}")[0])  # the item comes last
    monkeypatch.chdir(tmp_path)  # a user's file of the same name wins over the shipped one
    write_prompt(tmp_path / "instructions-first")
    assert load_prompt("instructions-first").system == "You grade answers."


def test_the_prompt_version_is_in_the_cache_key_and_every_record(tmp_path, judge_env):
    prompt_file = write_prompt(tmp_path / "p.json")
    version = load_prompt(prompt_file).version
    cache = JudgementCache(tmp_path / "cache")
    with FakeChatServer(word_judge) as server:
        judge_env.setenv("LLAMAVID_JUDGE_CACHE", str(cache.directory))
        config = {"judge": "local", "judge_base_url": server.url, "judge_model": "m"}
        builtin = build_judge(resolve_settings(config))
        first = builtin.judge(REQ)
        judge_env.setenv("LLAMAVID_JUDGE_PROMPT", str(prompt_file))
        reworded = build_judge(resolve_settings(config))
        second = reworded.judge(REQ)
        again = build_judge(resolve_settings(config)).judge(REQ)
    assert cache_key("local", "m", REQ, version) != cache_key("local", "m", REQ)
    assert first.metadata["prompt_version"] == "vcgpt-qa-v1" and not first.cached
    assert second.metadata["prompt_version"] == version and not second.cached  # other wording: asked again
    assert again.cached and again.metadata["prompt_version"] == version
    assert [c.body["messages"][0]["content"] for c in server.calls] == [BUILTIN.system, "You grade answers."]
    assert reworded.name == f"local:m#prompt={version}" and builtin.name == "local:m"
    assert len(cache) == 2


def test_a_bad_prompt_file_stops_the_judge_from_being_built(tmp_path):
    settings = resolve_settings({"judge": "local", "judge_prompt": str(tmp_path / "missing.yaml")}, env={})
    with pytest.raises(PromptError, match="missing.yaml"):
        build_judge(settings)


def test_a_judge_spec_carries_a_prompt():
    spec = parse_spec("hf:/models/m.gguf#prompt=/prompts/paper.yaml")
    assert spec.overrides() == {"backend": "hf", "model": "/models/m.gguf", "prompt": "/prompts/paper.yaml"}
    spec = parse_spec("local:m@http://127.0.0.1:8000/v1#prompt=p.yaml")
    assert (spec.model, spec.base_url, spec.prompt) == ("m", "http://127.0.0.1:8000/v1", "p.yaml")
    with pytest.raises(ValueError, match="needs a prompt file after it"):
        parse_spec("local:m#prompt=")
    two = parse_judges("local:m#prompt=a.yaml,local:m#prompt=b.yaml")
    assert [s.prompt for s in two] == ["a.yaml", "b.yaml"]


def test_swap_of_one_model_under_two_prompts_is_one_command(tmp_path):
    strict = write_prompt(tmp_path / "strict.json", system="You grade answers strictly.")
    source = runs_folder(tmp_path)
    with FakeChatServer(word_judge) as server:
        judges = f"local:m@{server.url},local:m@{server.url}#prompt={strict}"
        rc = main(["swap", str(source), "--judges", judges, "--out", str(tmp_path / "report"), "--no-plots"])
    report = json.loads((tmp_path / "report" / "swap_report.json").read_text())
    version = load_prompt(strict).version
    assert report["judges"] == ["local:m", f"local:m#prompt={version}"]
    systems = {c.body["messages"][0]["content"] for c in server.calls}
    assert systems == {BUILTIN.system, "You grade answers strictly."}
    assert rc == 0
