"""The on-disk judgement cache: hits, key contents, failures not stored, concurrent writers."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from llamavid_eval.judges import JudgeRequest
from llamavid_eval.judges.base import Judgement
from llamavid_eval.judges.cache import JudgementCache, cache_key
from llamavid_eval.judges.engine import ConversationJudge, Reply
from llamavid_eval.judges.prompt import BUILTIN

REQ = JudgeRequest("What is the man doing?", "running", "He runs.")
ROOT = Path(__file__).resolve().parents[1]


class Scripted(ConversationJudge):
    """A judge whose replies come from a list; counts how often it was asked."""

    backend = "scripted"

    def __init__(self, model, replies, **kw):
        super().__init__(model, **kw)
        self.replies = list(replies)
        self.asked = 0

    def _complete(self, conversations, on_reply):
        for index, _ in enumerate(conversations):
            self.asked += 1
            on_reply(index, Reply(text=self.replies.pop(0)) if self.replies else Reply(error="script exhausted"))


def ok(score=4):
    return Judgement(True, score, "{'pred': 'yes', 'score': 4}", "local", "m")


def test_key_depends_on_every_part():
    base = cache_key("local", "m", REQ)
    assert base == cache_key("local", "m", JudgeRequest(*[REQ.question, REQ.answer, REQ.prediction]))
    others = {
        cache_key("openai", "m", REQ),
        cache_key("local", "m2", REQ),
        cache_key("local", "m", REQ, prompt_version="other"),
        cache_key("local", "m", JudgeRequest("x", REQ.answer, REQ.prediction)),
        cache_key("local", "m", JudgeRequest(REQ.question, "x", REQ.prediction)),
        cache_key("local", "m", JudgeRequest(REQ.question, REQ.answer, "x")),
        # field boundaries cannot shift: ("ab", "c") differs from ("a", "bc")
        cache_key("local", "m", JudgeRequest("What is the man doing?r", "unning", REQ.prediction)),
    }
    assert base not in others and len(others) == 7


def test_second_run_hits_and_model_change_misses(tmp_path):
    cache = JudgementCache(tmp_path / "c")
    first = Scripted("m", ["{'pred': 'yes', 'score': 4}"], cache=cache)
    assert first.judge_many([REQ])[0].cached is False and first.asked == 1
    again = Scripted("m", [], cache=cache)
    hit = again.judge_many([REQ])[0]
    assert (hit.cached, hit.verdict, hit.score, again.asked) == (True, True, 4, 0)
    other_model = Scripted("m-other", ["{'pred': 'no', 'score': 1}"], cache=cache)
    miss = other_model.judge_many([REQ])[0]
    assert (miss.cached, miss.verdict, other_model.asked) == (False, False, 1)
    assert len(cache) == 2


def test_prompt_version_change_misses(tmp_path):
    cache = JudgementCache(tmp_path)
    Scripted("m", ["{'pred': 'yes', 'score': 4}"], cache=cache).judge_many([REQ])
    reworded = dataclasses.replace(BUILTIN, version="vcgpt-qa-v999")
    fresh = Scripted("m", ["{'pred': 'no', 'score': 2}"], cache=cache, prompt=reworded)
    assert fresh.judge_many([REQ])[0].cached is False and fresh.asked == 1


def test_failures_are_not_cached(tmp_path):
    cache = JudgementCache(tmp_path)
    bad = Scripted("m", ["no idea", "still no idea"], cache=cache, parse_retries=1)
    j = bad.judge_many([REQ])[0]
    assert j.failed and j.metadata["parse_failures"] == 2
    assert len(cache) == 0
    good = Scripted("m", ["{'pred': 'no', 'score': 2}"], cache=cache)
    assert good.judge_many([REQ])[0].failed is False and good.asked == 1 and len(cache) == 1
    assert cache.put_many([("k", Judgement.failure("x", backend="b", model="m"))]) == 0


def test_threads_write_concurrently(tmp_path):
    cache = JudgementCache(tmp_path)
    errors = []

    def work(t):
        try:
            for i in range(50):
                cache.put_many([(f"t{t}-{i}", ok(i % 6))])
                cache.get_many([f"t{t}-{i}"])
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(cache) == 400
    assert cache.get_many(["t3-10"])["t3-10"].score == 10 % 6


def test_two_processes_write_concurrently(tmp_path):
    script = textwrap.dedent(
        """
        import sys
        from llamavid_eval.judges.base import Judgement
        from llamavid_eval.judges.cache import JudgementCache
        cache = JudgementCache(sys.argv[1])
        for i in range(150):
            cache.put_many([(f"{sys.argv[2]}-{i}", Judgement(True, 3, "r", "local", "m")),
                            (f"shared-{i}", Judgement(False, 1, "r", "local", "m"))])
        print(len(cache.get_many([f"{sys.argv[2]}-{i}" for i in range(150)])))
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path), name],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [o[0].strip() for o in outs] == ["150", "150"]
    assert len(JudgementCache(tmp_path)) == 150 * 3


def test_each_verdict_is_cached_as_it_arrives_not_when_the_batch_ends(tmp_path):
    cache = JudgementCache(tmp_path)
    seen: list[int] = []

    class Watching(Scripted):
        def _complete(self, conversations, on_reply):
            for index, _ in enumerate(conversations):
                seen.append(len(cache))  # what the cache holds before this reply arrives
                on_reply(index, Reply(text="{'pred': 'yes', 'score': 5}"))

    reqs = [JudgeRequest(f"q{i}", "a", "p") for i in range(3)]
    Watching("m", [], cache=cache).judge_many(reqs)
    assert seen == [0, 1, 2] and len(cache) == 3
