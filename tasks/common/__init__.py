"""Shared pieces of the task folders: data root, local-dataset task class, judged metrics."""
