"""lmms-eval plugin: registers the ``llamavid`` model and makes this package's tasks findable.

lmms-eval loads the entry point ``lmms_eval.models: llamavid = llamavid_eval.lmms_plugin:manifests``
when it builds its model registry (at import of ``lmms_eval.models``, before any task is looked
up). Tasks have no entry-point group in lmms-eval 0.7, and its ``LMMS_EVAL_PLUGINS`` task path is
appended only after the ``TaskManager`` was built (so it has no effect in 0.7.3). To make
``lmms-eval --tasks msvd_qa`` work with no ``--include_path``, this is the ONE place where we extend
lmms-eval: ``TaskManager.initialize_tasks`` also indexes our ``tasks/`` folder, exactly as if the
user had passed ``--include_path <site-packages>/tasks``. It only adds a search path (lmms-eval's
own tasks keep precedence), is idempotent, and is switched off with ``LLAMAVID_EVAL_TASKS=0``.
"""

from __future__ import annotations

import os

from lmms_eval.models.registry_v2 import ModelManifest

MODEL_ID = "llamavid"
BACKEND_CLASS = "llamavid_eval.model.lmms_backend.LlamaVid"


def manifests() -> list[ModelManifest]:
    """Entry-point payload: the ``llamavid`` model (and, unless disabled, our task folder)."""
    if os.environ.get("LLAMAVID_EVAL_TASKS", "1") != "0":
        register_task_folder()
    return [ModelManifest(model_id=MODEL_ID, simple_class_path=BACKEND_CLASS)]


def register_task_folder() -> None:
    """Let every ``TaskManager`` index ``tasks/`` as an extra include path (idempotent)."""
    from lmms_eval.tasks import TaskManager

    from llamavid_eval.tasks import TASKS_DIR

    original = TaskManager.initialize_tasks
    if getattr(original, "_llamavid_tasks", False):
        return

    def initialize_tasks(self, include_path=None, include_defaults=True):
        paths = [include_path] if isinstance(include_path, str) else list(include_path or [])
        if str(TASKS_DIR) not in {os.path.abspath(str(p)) for p in paths}:
            paths.append(str(TASKS_DIR))
        return original(self, include_path=paths, include_defaults=include_defaults)

    initialize_tasks._llamavid_tasks = True
    TaskManager.initialize_tasks = initialize_tasks
