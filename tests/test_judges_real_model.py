"""A real open-weights judge in process: SmolLM2-135M-Instruct from its GGUF, constrained verdicts.

What is asserted is the machinery - every verdict recorded with its probability, nothing re-asked,
nothing lost, failures counted (zero here), the cache serving the second pass, the re-judge /
agreement / swap outputs naming the real judge with their intervals - not the accuracy of a 135M
model (it says "yes" to nearly everything). The model loads once per command (~15 s on 2 cores);
the commands share one verdict cache, so only the first one loads it.
"""

from __future__ import annotations

import json

import pytest
from test_judges_hf import reference_choice

from llamavid_eval.judges import JudgeRequest
from llamavid_eval.judges.__main__ import main
from llamavid_eval.judges.backends import constrained
from llamavid_eval.judges.backends.hf import HFJudge, _shared_length
from llamavid_eval.judges.cache import JudgementCache
from llamavid_eval.judges.prompt import BUILTIN, load_prompt, parse_reply

pytestmark = pytest.mark.usefixtures("judge_env")

REQS = [
    JudgeRequest("What animal is shown?", "dog", "a dog"),
    JudgeRequest("What colour is the car?", "red", "It is blue."),
    JudgeRequest("How many people are there?", "three", "3"),
    JudgeRequest("What is the man doing?", "running", "He is swimming in a lake."),
    JudgeRequest("What animal is shown?", "dog", "a dog"),  # a duplicate: judged once
]


def check_constrained(j) -> None:
    """One recorded constrained verdict: asked once, parseable, with its probabilities."""
    m = j.metadata
    assert not j.failed and j.error is None and isinstance(j.verdict, bool) and j.score in range(6)
    assert (m["attempts"], m["parse_failures"], m["decoding"]) == (1, 0, "constrained")
    assert 0.0 <= m["p_yes"] <= 1.0 and (m["p_yes"] >= 0.5) == j.verdict
    assert sum(m["score_probs"]) == pytest.approx(1.0, abs=1e-4) and m["p_score"] == max(m["score_probs"])
    parsed = parse_reply(j.raw)  # the recorded reply is the canonical frame the parser reads
    assert (parsed.verdict, parsed.score) == (j.verdict, j.score)


def test_in_process_from_the_gguf_records_constrained_verdicts_and_caches_them(smollm2_gguf, tmp_path):
    # the device left to the judge (cpu here) as the commands below do: the model they load is this one
    judge = HFJudge(str(smollm2_gguf), batch_size=2, cache=JudgementCache(tmp_path / "cache"))
    out = judge.judge_many(REQS)
    assert len(out) == len(REQS) and judge.name == f"hf:{smollm2_gguf}"
    for j in out:
        check_constrained(j)
        assert j.model == str(smollm2_gguf) and not j.cached
    assert out[0].to_dict() == out[-1].to_dict()
    # the batched, shared-prefix scoring equals scoring each full candidate reply alone
    tok, lm = judge._load()
    frames = constrained.frames(tok, [judge._render(tok, judge.prompt.messages(r)) for r in REQS[:2]])
    assert all(len(w) == 1 for w in frames[0].words)  # SmolLM2 spells "yes" and "no" as one token each
    for j, frame in zip(out, frames, strict=False):
        p_yes, scores, verdict = reference_choice(lm, frame)
        assert j.verdict is verdict and j.metadata["p_yes"] == pytest.approx(p_yes, abs=1e-4)
        assert j.metadata["score_probs"] == pytest.approx(scores, abs=1e-4)
    again = HFJudge(str(smollm2_gguf), cache=JudgementCache(tmp_path / "cache")).judge_many(REQS)
    assert all(j.cached for j in again) and [j.raw for j in again] == [j.raw for j in out]
    assert [j.metadata["p_yes"] for j in again] == [j.metadata["p_yes"] for j in out]


def test_rejudge_agree_and_swap_over_real_lmms_eval_runs(smollm2_gguf, genuine_output, tmp_path, capsys):
    """``exact`` vs ``hf:<the .gguf>`` over real lmms-eval output: all recorded, none failed, reported."""
    cache, gguf = str(tmp_path / "cache"), str(smollm2_gguf)
    hf_out, exact_out = tmp_path / "hf", tmp_path / "exact"
    assert main(["rejudge", str(genuine_output), "--judge", "hf", "--judge-model", gguf, "--out", str(hf_out), "--cache", cache]) == 0  # fmt: skip
    assert main(["rejudge", str(genuine_output), "--judge", "exact", "--out", str(exact_out)]) == 0
    summaries = sorted(hf_out.rglob("*_summary.json"))
    assert len(summaries) == 2  # both runs
    for path in summaries:
        summary = json.loads(path.read_text())
        assert summary["rejudge"]["judge"] == f"hf:{gguf}"
        for task in ("demo_qa", "demo_qa_b"):
            result = summary["results"][task]
            assert (result["n"], result["failures"]) == (3, 0) and result["accuracy_ci"] is not None
    rows = [json.loads(line) for f in sorted(hf_out.rglob("*_items.jsonl")) for line in f.read_text().splitlines()]
    assert len(rows) == 12  # 2 runs x 2 tasks x 3 items: nothing lost
    for row in rows:
        assert not row["failed"] and row["metadata"]["attempts"] == 1 and 0 <= row["metadata"]["p_yes"] <= 1

    capsys.readouterr()
    assert main(["agree", str(exact_out), str(hf_out), "--json"]) == 0
    agreement = json.loads(capsys.readouterr().out)
    text = json.dumps(agreement)
    assert "kappa" in text and gguf in text and "NaN" not in text

    report_dir = tmp_path / "swap"
    swap = ["swap", str(genuine_output), "--judges", f"exact,hf:{gguf}", "--out", str(report_dir), "--cache", cache]
    assert main([*swap, "--no-plots"]) == 0
    report = json.loads((report_dir / "swap_report.json").read_text())
    assert report["judges"] == ["exact-match", f"hf:{gguf}"]
    assert report["failures"][f"hf:{gguf}"]["failed"] == 0 and report["failures"][f"hf:{gguf}"]["total"] == 12
    pair = report["pairs"][0]
    assert pair["kappa_ci"] is not None and pair["agreement"] is not None
    shift = next(s for s in report["shifts"] if s["judge"] == f"hf:{gguf}")
    assert {"estimate", "low", "high"} <= set(shift["accuracy_shift"])
    markdown = (report_dir / "swap_report.md").read_text()
    assert f"hf:{gguf}" in markdown and "nan" not in markdown.lower()
    pooled = {(p["task"], p["judge"]): p for p in report["per_judge"] if p["run"] == "all runs"}
    for task in ("demo_qa", "demo_qa_b"):  # P(yes) summarised for the in-process judge, absent for exact match
        assert pooled[(task, "exact-match")]["confidence"] is None
        sure = pooled[(task, f"hf:{gguf}")]["confidence"]
        assert sure["n"] == 6 and 0 <= sure["mean_p_yes"] <= 1 and 0.5 <= sure["mean_p_verdict"] <= 1
    assert "How sure each judge was" in markdown and "not recorded" in markdown


def test_preflight_accepts_the_gguf_and_names_what_is_wrong(smollm2_gguf, tmp_path, monkeypatch):
    """A .gguf passes the in-process preflight (it failed: 'config file ... not a valid JSON file'); a
    folder of several, a tensor type gguf cannot dequantise, or no gguf package stop it, each saying
    which file and what to do."""
    import sys

    import gguf as gguf_package

    from llamavid_eval.judges.backends import gguf
    from llamavid_eval.judges.factory import resolve_settings
    from llamavid_eval.judges.preflight import JudgeUnavailable, preflight

    def check(model):
        return preflight(resolve_settings(overrides={"backend": "hf", "model": str(model)}, env={}))

    assert check(smollm2_gguf).model == str(smollm2_gguf)
    assert check(smollm2_gguf.parent).backend == "hf"  # the package folder holds exactly one .gguf
    several = tmp_path / "several"
    several.mkdir()
    for name in ("a.gguf", "b.gguf"):
        (several / name).symlink_to(smollm2_gguf)
    with pytest.raises(JudgeUnavailable, match=r"holds several GGUF files \(a.gguf, b.gguf\); name one"):
        check(several)
    with pytest.raises(JudgeUnavailable, match="no GGUF file at"):
        check(tmp_path / "missing.gguf")
    readable = {t: q for t, q in gguf_package.quants._type_traits.items() if t.name != "Q4_1"}
    monkeypatch.setattr(gguf_package.quants, "_type_traits", readable)
    with pytest.raises(
        JudgeUnavailable, match=r"holds tensors of type\(s\) Q4_1, which transformers cannot dequantise"
    ):
        check(smollm2_gguf)
    monkeypatch.setitem(sys.modules, "gguf", None)  # not installed
    with pytest.raises(gguf.GGUFError, match=r'pip install gguf \(or pip install "llamavid-eval\[gguf\]"\)'):
        gguf.check(smollm2_gguf)


def test_instructions_first_leaves_only_the_item_and_the_reply_start_to_prefill(smollm2_gguf, tmp_path):
    """With the real tokenizer and chat template: under the shipped ``instructions-first`` prompt every
    fixed instruction lies in the prefix all prompts share (computed once per run), under the built-in
    prompt ~60 tokens of them follow the item in every prompt. The verdicts stay constrained ones."""
    first = load_prompt("instructions-first")
    judge = HFJudge(str(smollm2_gguf), batch_size=4, prompt=first, cache=JudgementCache(tmp_path / "cache"))
    tok, _ = judge._load()
    own = {}
    for prompt in (BUILTIN, first):
        ids = judge._encode(tok, [prompt.messages(r) for r in REQS[:4]])
        shared = _shared_length(ids)
        own[prompt.version] = sum(len(i) - shared for i in ids) / len(ids)
        if prompt is first:
            assert tok.decode(ids[0][:shared]).endswith(
                "Do not write anything else.<|im_end|>\n<|im_start|>user\n"
                "Judge this question-answer pair about a video.\nQuestion:"
            )
            assert "Reply" not in tok.decode(ids[0][shared:])
    assert own[BUILTIN.version] - own[first.version] >= 50, own  # the reply instructions left the items' own part
    out = judge.judge_many(REQS[:4])
    for j in out:
        check_constrained(j)
        assert j.metadata["prompt_version"] == first.version + constrained.VERSION_TAG
