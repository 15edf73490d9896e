"""UCF-Crime classes, the two prompts (multiple choice; the study's 11 categories) and answer mapping.

Classes come from :mod:`llamavid_eval.core.ucf` (keyed as in the file names). Mapping a free-text answer to a class is deterministic:
1. a letter option (``B``, ``b.``, ``(B)``, ``B) Arrest``, ``Answer: B``) -> that option's class;
2. otherwise the class names (case/spacing/underscore tolerant, plural allowed) found as words: exactly
   one distinct class -> that class;
3. otherwise (none, or several different classes) -> ``UNMAPPED``.
"""

from __future__ import annotations

import re

from llamavid_eval.core.ucf import CLASSES, UNMAPPED

LETTERS = {chr(ord("A") + i): c for i, c in enumerate(CLASSES)}
DISPLAY = {"RoadAccidents": "Road Accidents"}

MC_PROMPT = (
    "Which category best describes the event in this surveillance video?\n"
    + "\n".join(f"{letter}. {DISPLAY.get(c, c)}" for letter, c in LETTERS.items())
    + "\nAnswer with the option's letter and category name."
)

# The study's protocol: 10 anomaly classes + "Normal Video"; Shoplifting, Stealing, Vandalism are not offered.
NOT_IN_JUDGED_PROMPT = ("Shoplifting", "Stealing", "Vandalism")
JUDGED_NAMES = {
    c: {"RoadAccidents": "Road Accident", "Normal": "Normal Video"}.get(c, c)
    for c in CLASSES
    if c not in NOT_IN_JUDGED_PROMPT
}
JUDGED_PROMPT = (  # the study's words, in its order (Robbery before Road Accident)
    "Which one of the following categories describes what happens in this video: Abuse, Arrest, Arson, Assault, "
    "Burglary, Explosion, Fighting, Robbery, Road Accident, Shooting, Normal Video? Answer with the category."
)

_SPELLINGS = {  # beyond the class name itself (any case)
    "Explosion": "explosions?", "RoadAccidents": r"road[\s_-]*accidents?", "Shoplifting": r"shop[\s_-]*lifting",
    "Normal": r"normal(?:[\s_-]*videos?)?",
}  # fmt: skip
_NAME_PATTERNS = {c: re.compile(rf"\b{_SPELLINGS.get(c, c.lower())}\b", re.IGNORECASE) for c in CLASSES}
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
