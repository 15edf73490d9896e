"""Synthetic demo dataset + ``llamavid_demo`` lmms-eval task: the CPU-only end-to-end default."""
