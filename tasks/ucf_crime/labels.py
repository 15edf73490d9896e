"""UCF-Crime classes, the two prompts (multiple choice; the study's 11 categories) and answer mapping.

Classes come from :mod:`llamavid_eval.core.ucf` (keyed as in the file names). Mapping a free-text answer to a class is deterministic:
1. a letter option (``B``, ``b.``, ``(B)``, ``B) Arrest``, ``Answer: B``) -> that option's class;
2. otherwise the class names (case/spacing/underscore tolerant, plural allowed) found as words: exactly
   one distinct class -> that class;
3. otherwise (none, or several different classes) -> ``UNMAPPED``.
"""

from __future__ import annotations

import re

from llamavid_eval.core.ucf import ANOMALY_CLASSES, CLASSES, NORMAL, UNMAPPED, class_from_filename

__all__ = ["ANOMALY_CLASSES", "CLASSES", "NORMAL", "UNMAPPED", "class_from_filename", "map_answer", "mc_answer"]
LETTERS = {chr(ord("A") + i): c for i, c in enumerate(CLASSES)}
DISPLAY = {"RoadAccidents": "Road Accidents"}

MC_PROMPT = (
    "Which category best describes the event in this surveillance video?\n"
    + "\n".join(f"{letter}. {DISPLAY.get(c, c)}" for letter, c in LETTERS.items())
    + "\nAnswer with the option's letter and category name."
)

# The study's protocol: 10 anomaly classes + "Normal Video"; Shoplifting, Stealing, Vandalism are not offered.
JUDGED_NAMES = {
    "Abuse": "Abuse", "Arrest": "Arrest", "Arson": "Arson", "Assault": "Assault", "Burglary": "Burglary",
    "Explosion": "Explosion", "Fighting": "Fighting", "Robbery": "Robbery", "RoadAccidents": "Road Accident",
    "Shooting": "Shooting", "Normal": "Normal Video",
}  # fmt: skip
JUDGED_PROMPT = (
    "Which one of the following categories describes what happens in this video: "
    + ", ".join(JUDGED_NAMES.values())
    + "? Answer with the category."
)

_NAME_PATTERNS = {
    c: re.compile(rf"\b{p}\b", re.IGNORECASE)
    for c, p in {
        "Abuse": "abuse", "Arrest": "arrest", "Arson": "arson", "Assault": "assault", "Burglary": "burglary",
        "Explosion": "explosions?", "Fighting": "fighting", "RoadAccidents": r"road[\s_-]*accidents?",
        "Robbery": "robbery", "Shooting": "shooting", "Shoplifting": r"shop[\s_-]*lifting", "Stealing": "stealing",
        "Vandalism": "vandalism", "Normal": r"normal(?:[\s_-]*videos?)?",
    }.items()
}  # fmt: skip
_PREFIX = r"(?:(?:the\s+)?(?:correct\s+)?(?:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*)?"
_LETTER = re.compile(rf"^[\s\"'*]*{_PREFIX}(?:\((?P<paren>[a-n])\)|(?P<bare>[a-n])(?=[.):]|\s*$))", re.IGNORECASE)


def map_answer(text: str) -> str:
    """Class for a model answer to :data:`MC_PROMPT`, or ``UNMAPPED`` (see the module docstring)."""
    letter = _LETTER.match(text)
    if letter:
        return LETTERS[(letter.group("paren") or letter.group("bare")).upper()]
    found = {c for c, pattern in _NAME_PATTERNS.items() if pattern.search(text)}
    return found.pop() if len(found) == 1 else UNMAPPED


def mc_answer(cls: str) -> str:
    """The training target for :data:`MC_PROMPT`: ``"<letter>. <category>"``."""
    letter = next(k for k, v in LETTERS.items() if v == cls)
    return f"{letter}. {DISPLAY.get(cls, cls)}"
