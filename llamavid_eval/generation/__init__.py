"""Fast greedy decoding of any transformers causal LM: the video model's answers and the in-process
judge's verdicts share it. Imports only ``core`` of ours (``tests/test_layout.py``)."""
