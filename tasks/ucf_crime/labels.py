"""UCF-Crime classes, the two prompts (multiple choice; the study's 11 categories) and answer mapping.

Classes are keyed as in the file names (``RoadAccidents001_x264.mp4`` -> ``RoadAccidents``;
``Normal_Videos_003_x264.mp4`` -> ``Normal``). Mapping a free-text answer to a class is deterministic:
1. a letter option (``B``, ``b.``, ``(B)``, ``B) Arrest``, ``Answer: B``) -> that option's class;
2. otherwise the class names (case/spacing/underscore tolerant, plural allowed) found as words: exactly
   one distinct class -> that class;
3. otherwise (none, or several different classes) -> ``UNMAPPED``.
"""

from __future__ import annotations

import re

ANOMALY_CLASSES = (
    "Abuse", "Arrest", "Arson", "Assault", "Burglary", "Explosion", "Fighting",
    "RoadAccidents", "Robbery", "Shooting", "Shoplifting", "Stealing", "Vandalism",
)  # fmt: skip
NORMAL = "Normal"
CLASSES = (*ANOMALY_CLASSES, NORMAL)
UNMAPPED = "UNMAPPED"
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

_FILE_PREFIX = re.compile(r"^(?P<prefix>[A-Za-z]+(?:_[A-Za-z]+)*?)_?\d+")
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


def class_from_filename(name: str) -> str | None:
    """The class a UCF-Crime file name encodes, or None when the prefix is not a known class."""
    match = _FILE_PREFIX.match(name)
    if not match:
        return None
    prefix = match.group("prefix")
    if prefix.lower() in ("normal_videos", "normal"):
        return NORMAL
    return prefix if prefix in ANOMALY_CLASSES else None


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
