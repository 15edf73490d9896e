"""The reply parser: what real judges write is accepted, everything else is rejected with a reason."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llamavid_eval.judges.prompt import ParsedReply, ParseError, parse_reply

ACCEPTED = [
    ("{'pred': 'yes', 'score': 4}", True, 4),
    ('{"pred": "no", "score": 0}', False, 0),
    ("```python\n{'pred': 'Yes', 'score': 5}\n```", True, 5),
    ('```json\n{"pred": "YES", "score": "3"}\n```\nHope this helps!', True, 3),
    ("Sure. Here is my evaluation: {'pred': 'no', 'score': 1.0} - the colour is wrong.", False, 1),
    ("{'pred': ' yes. ', 'score': ' 2 '}", True, 2),
    ('{"Pred": "no", "Score": 2, "reason": "mentions a {different} animal"}', False, 2),
    ("{'pred': 'yes', 'score': 4}\n\n{'pred': 'yes', 'score': 4}", True, 4),  # repeated, consistent
    ('{"pred": "yes", "score": 4.0}', True, 4),
    ("here's { {'pred': 'no', 'score': 2}", False, 2),  # a stray brace before the dict
]

REJECTED = [
    ("", "empty reply"),
    ("yes, score 4", "no dictionary found"),
    ("{'pred': 'yes'}", "missing key 'score'"),
    ("{'score': 3}", "missing key 'pred'"),
    ("{'verdict': 'yes', 'rating': 3}", "no dictionary with 'pred' and 'score'"),
    ("{'pred': 'maybe', 'score': 3}", "pred must be 'yes' or 'no'"),
    ("{'pred': True, 'score': 3}", "pred must be 'yes' or 'no'"),
    ("{'pred': 'yes', 'score': 6}", "score out of range 0-5"),
    ("{'pred': 'yes', 'score': -1}", "score out of range 0-5"),
    ("{'pred': 'yes', 'score': 3.5}", "score must be a whole number"),
    ("{'pred': 'yes', 'score': 'four'}", "score must be a number"),
    ("{'pred': 'yes', 'score': True}", "score must be a number"),
    ('{"pred": "yes", "score": NaN}', "score must be a number"),
    ("{'pred': 'yes', 'score': 4} or maybe {'pred': 'no', 'score': 1}", "several dictionaries"),
]

# Verbatim replies of SmolLM2-135M-Instruct to the judge prompt (issue 21): none of them is a verdict.
NOT_VERDICTS = [
    ("The answer is: the shape moves to the left", "no dictionary found"),
    (
        "You can use the following Python code to create a dictionary with two keys: "
        "`{'yes_match': 4, 'no_match': 5}` ...",
        "no dictionary with 'pred' and 'score'",
    ),
    # the prompt's own example, echoed inside a function the judge wrote: it was recorded as a verdict
    ("def create_dictionary(data):\n    return {\n        'pred': 'yes',\n        'score': 4\n    }", "holds code"),
]

# Code in other shapes: the dictionary is an example whatever surrounds it.
CODE = [
    "```python\ndef judge(q, a, p):\n    return {'pred': 'yes', 'score': 4}\n```",
    "Here is how:\n```python\nresult = {'pred': 'no', 'score': 1}\nprint(result)\n```",
    "You can return it like this:\n\n    return {'pred': 'yes', 'score': 4}",
    "The function below returns {'pred': 'yes', 'score': 4} as in the example.\n\nimport json\n",
    "verdict = {'pred': 'yes', 'score': 4}",
    "```js\nconst verdict = {pred: 'yes', score: 4};\n```\n{'pred': 'yes', 'score': 4}",
    "class Judge:\n    verdict = {'pred': 'yes', 'score': 4}",
]


@pytest.mark.parametrize(("text", "verdict", "score"), ACCEPTED)
def test_accepts_what_real_judges_write(text, verdict, score):
    assert parse_reply(text) == ParsedReply(verdict, score)


@pytest.mark.parametrize(("text", "reason"), REJECTED)
def test_rejects_with_a_reason(text, reason):
    with pytest.raises(ParseError) as info:
        parse_reply(text)
    assert reason in info.value.reason


@pytest.mark.parametrize(("text", "reason"), NOT_VERDICTS)
def test_verbatim_non_verdicts_of_a_real_small_judge(text, reason):
    with pytest.raises(ParseError) as info:
        parse_reply(text)
    assert reason in info.value.reason


@pytest.mark.parametrize("text", CODE)
def test_a_dictionary_in_code_is_not_a_verdict(text):
    with pytest.raises(ParseError, match="holds code"):
        parse_reply(text)


@pytest.mark.parametrize(
    "text",
    [
        '```json\n{"pred": "yes", "score": 4}\n```',  # fenced, alone
        'The answer is:\n```python\n{\n  "pred": "yes",\n  "score": 4\n}',  # fence cut at the brace
        "Returning to the question: the prediction matches. {'pred': 'yes', 'score': 4}",  # words, not code
        "My verdict: {'pred': 'yes', 'score': 4} - the score reflects a close paraphrase.",
        "`{'pred': 'yes', 'score': 4}`",
    ],
)
def test_verdicts_next_to_code_like_words_are_kept(text):
    assert parse_reply(text) == ParsedReply(True, 4)


def test_non_text_is_rejected():
    with pytest.raises(ParseError, match="not text"):
        parse_reply(None)


yes_no = st.sampled_from(["yes", "no"]).flatmap(
    lambda w: st.sampled_from([w, w.upper(), w.capitalize(), f" {w} ", f"{w}."])
)
valid_score = st.integers(0, 5)
# no braces or quotes (another dictionary) and no "=" ("x = {...}" is code, not a verdict)
prose = st.text(alphabet=st.characters(blacklist_characters="{}'\"=", blacklist_categories=("Cs",)), max_size=40)


def render(pred: str, score, style: str) -> str:
    if style == "python":
        return repr({"pred": pred, "score": score})
    if style == "json":
        return json.dumps({"pred": pred, "score": score})
    return "```json\n" + json.dumps({"score": score, "pred": pred}, indent=2) + "\n```"


@settings(max_examples=300, deadline=None)
@given(
    pred=yes_no,
    score=valid_score,
    as_type=st.sampled_from([int, str, float]),
    style=st.sampled_from(["python", "json", "fenced"]),
    before=prose,
    after=prose,
)
def test_property_valid_replies_parse_to_their_values(pred, score, as_type, style, before, after):
    text = before + render(pred, as_type(score), style) + after
    assert parse_reply(text) == ParsedReply(pred.strip().rstrip(".").lower() == "yes", score)


@settings(max_examples=200, deadline=None)
@given(
    pred=yes_no,
    score=st.one_of(st.integers(max_value=-1), st.integers(min_value=6)),
    style=st.sampled_from(["python", "json", "fenced"]),
)
def test_property_out_of_range_scores_are_rejected(pred, score, style):
    with pytest.raises(ParseError, match="out of range"):
        parse_reply(render(pred, score, style))


@settings(max_examples=200, deadline=None)
@given(pred=yes_no, score=st.floats(0, 5, allow_nan=False).filter(lambda x: not float(x).is_integer()))
def test_property_fractional_scores_are_rejected_not_rounded(pred, score):
    with pytest.raises(ParseError, match="whole number"):
        parse_reply(render(pred, score, "python"))


@settings(max_examples=200, deadline=None)
@given(
    pred=st.text(max_size=10).filter(lambda p: p.strip().rstrip(".!").strip().lower() not in ("yes", "no")),
    score=valid_score,
)
def test_property_pred_other_than_yes_no_is_rejected(pred, score):
    with pytest.raises(ParseError, match="pred must be"):
        parse_reply(render(pred, score, "json"))


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_property_arbitrary_text_never_crashes(text):
    try:
        result = parse_reply(text)
    except ParseError as err:
        assert err.reason  # a rejection always says why
    else:
        assert result.score in range(6) and isinstance(result.verdict, bool)


def test_garbage_with_many_braces_is_fast():
    import time

    start = time.monotonic()
    with pytest.raises(ParseError):
        parse_reply("{" * 20000 + "'")
    assert time.monotonic() - start < 2.0
