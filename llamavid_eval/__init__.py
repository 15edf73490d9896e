"""llamavid-eval: LLaMA-VID inside lmms-eval, LLM judges, fine-tuning and leaderboards.

One import namespace for the repository's folders (see ``pyproject.toml``), layered so that
dependencies point down (``tests/test_layout.py`` enforces it):

1. ``llamavid_eval.core``: data root, record formats, UCF-Crime classes, token ids, statistics;
2. ``llamavid_eval.generation``: fast greedy decoding of any transformers causal LM (the video
   model's answers and the in-process judge's verdicts);
3. ``llamavid_eval.model`` (folder ``llamavid_model/``) and ``llamavid_eval.judges``;
4. ``llamavid_eval.tasks``, ``llamavid_eval.training``, ``llamavid_eval.results``;
5. the command line (``llamavid``), the demo pipeline and the lmms-eval plugin.
"""

__version__ = "0.2.0"
