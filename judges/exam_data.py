"""The judge exam's items: a versioned data file read and checked (``judges/exam_v1.yaml``).

The exam is data, not code: items, kinds, the rule of each kind and the verdict it expects live in the
YAML file. Its version is the file's ``version`` plus a hash of the items, so that editing or adding an
item makes a new version and old exam reports (cached, recorded in results) keep naming what they
measured. The loader is strict - every value a quoted string, every kind a rule and an expected verdict,
no duplicate item - because a silently misread item would grade judges wrongly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamavid_eval.judges.base import JudgeRequest

BUILTIN_EXAM = Path(__file__).with_name("exam_v1.yaml")
TOPICS = ("object", "person", "action", "colour", "count", "place", "yes/no", "ucf-crime", "animal-kingdom")
_ITEM_KEYS = frozenset({"topic", "question", "answer", "prediction"})
_KIND_KEYS = frozenset({"expect", "rule", "items"})
_TOP_KEYS = frozenset({"version", "shared", "kinds"})


class ExamError(ValueError):
    """An exam file that cannot be used; the message names the file, the kind and the item."""


@dataclass(frozen=True)
class ExamItem:
    kind: str
    topic: str
    expect: bool  # the verdict a fit judge gives
    request: JudgeRequest


@dataclass(frozen=True)
class Exam:
    version: str  # e.g. ``exam-v1+3f9c0a1b2c3d``: the file's version and a hash of its items
    rules: dict[str, str]  # kind -> its rule
    expects: dict[str, bool]  # kind -> the verdict its items expect
    items: tuple[ExamItem, ...]
    source: str


def load_exam(path: str | Path | None = None) -> Exam:
    """The exam in ``path`` (default: the built-in ``exam_v1.yaml``); :class:`ExamError` if it is malformed."""
    import yaml

    file = Path(path).expanduser() if path else BUILTIN_EXAM
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as err:
        raise ExamError(f"judge exam {file}: cannot read it ({err.strerror or err}); check the path") from None
    except UnicodeDecodeError as err:
        raise ExamError(f"judge exam {file}: not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    except yaml.YAMLError as err:
        raise ExamError(f"judge exam {file}: not valid YAML: {err}") from None
    if not isinstance(data, dict) or set(data) - _TOP_KEYS or not isinstance(data.get("kinds"), dict):
        raise ExamError(f"judge exam {file}: must be a mapping with keys version, kinds (and shared)")
    base = data.get("version")
    if not isinstance(base, str) or not base.strip():
        raise ExamError(f"judge exam {file}: 'version' must be a quoted text such as \"exam-v1\"")
    rules, expects, items = {}, {}, []
    for kind, spec in data["kinds"].items():
        rules[kind], expects[kind] = _kind(file, kind, spec)
        for index, raw in enumerate(spec["items"]):
            items.append(_item(file, kind, index, raw, expects[kind]))
    seen: set[tuple[str, str, str]] = set()
    for item in items:
        key = (item.request.question, item.request.answer, item.request.prediction)
        if key in seen:
            raise ExamError(f"judge exam {file}: item {key!r} occurs twice; each item once")
        seen.add(key)
    if not items or set(expects.values()) != {True, False}:
        raise ExamError(f"judge exam {file}: needs items of both verdicts (kinds expecting yes and kinds expecting no)")
    return Exam(f"{base.strip()}+{_digest(rules, expects, items)}", rules, expects, tuple(items), str(file))


def _kind(file: Path, kind: str, spec: Any) -> tuple[str, bool]:
    where = f"judge exam {file}: kind {kind!r}"
    if not isinstance(spec, dict) or set(spec) != _KIND_KEYS:
        raise ExamError(f"{where} must have exactly the keys {', '.join(sorted(_KIND_KEYS))}")
    if spec["expect"] not in ("yes", "no"):
        raise ExamError(f'{where}: expect must be the quoted text "yes" or "no", got {spec["expect"]!r}')
    if not isinstance(spec["rule"], str) or not spec["rule"].strip():
        raise ExamError(f"{where}: 'rule' must say in words what makes its items {spec['expect']}")
    if not isinstance(spec["items"], list) or not spec["items"]:
        raise ExamError(f"{where}: 'items' must be a non-empty list")
    return spec["rule"].strip(), spec["expect"] == "yes"


def _item(file: Path, kind: str, index: int, raw: Any, expect: bool) -> ExamItem:
    where = f"judge exam {file}: kind {kind!r}, item {index + 1}"
    if not isinstance(raw, dict) or set(raw) != _ITEM_KEYS:
        raise ExamError(f"{where} must have exactly the keys {', '.join(sorted(_ITEM_KEYS))}, got {raw!r}")
    bad = sorted(k for k, v in raw.items() if not isinstance(v, str))
    if bad:
        raise ExamError(f"{where}: {', '.join(bad)} must be quoted text (YAML reads bare yes/no/numbers otherwise)")
    if raw["topic"] not in TOPICS:
        raise ExamError(f"{where}: unknown topic {raw['topic']!r}; valid: {', '.join(TOPICS)}")
    if not raw["question"].strip() or not raw["answer"].strip():
        raise ExamError(f"{where}: question and answer must not be empty")
    return ExamItem(kind, raw["topic"], expect, JudgeRequest(raw["question"], raw["answer"], raw["prediction"]))


def _digest(rules: dict[str, str], expects: dict[str, bool], items: list[ExamItem]) -> str:
    """12 hex digits over what grades a judge (items, expected verdicts, rules): not comments or layout."""
    payload = [
        rules,
        expects,
        [[i.kind, i.topic, i.request.question, i.request.answer, i.request.prediction] for i in items],
    ]
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()[:12]
