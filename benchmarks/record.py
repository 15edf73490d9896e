"""Machine-readable benchmark records: one JSON file per run, so that figures are never prose alone.

Every benchmark ends with :func:`write_record`. A record holds what a reader needs to trust and
repeat the figure: the benchmark's name, the device torch ran on (its GPU's name, or ``cpu``), the
commit of the code that ran, the exact command, the UTC date, and the figures under the names the
script prints, plus the environment variables that change a run. Records go to ``benchmarks/results/`` unless ``BENCH_RECORD_DIR`` names another
folder (on the lent GPU machine: ``$OUT``, copied back and committed). That machine gets a copy
of the working tree without ``.git``, so the commit comes from ``BENCH_COMMIT`` when git cannot
tell; a record whose commit is unknown says ``unknown`` rather than guessing.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"


def device_name() -> str:
    """The GPU's name as torch reports it, or ``cpu``."""
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def commit() -> str:
    """``BENCH_COMMIT`` if set, else the checkout's HEAD (``+dirty`` when tracked code was changed)."""
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"]
    root = Path(__file__).parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=root, check=False).returncode
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty else "")


def command() -> str:
    """The command line as it was typed (script path relative to the repository root)."""
    return shlex.join([Path(sys.executable).name, *sys.argv])


def settings() -> dict[str, str]:
    """The environment variables that change what a run does (judge settings, transformers' hub kernels)."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(("LLAMAVID_", "USE_HUB_KERNELS"))}


def _plain(value: Any) -> str | float:
    """JSON for what ``json`` cannot write itself: paths (``--video-dir``) as text, numbers (numpy, torch) as floats."""
    return str(value) if isinstance(value, Path) else float(value)


def write_record(
    benchmark: str, figures: dict[str, Any], folder: Path | None = None, device: str | None = None
) -> Path:
    """Write ``figures`` with the run's identity as ``<date>_<benchmark>_<device>.json``; returns the path.
    ``device`` names the GPU when the figures were measured elsewhere (a re-analysis of kept samples)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    record = {
        "benchmark": benchmark,
        "device": device or device_name(),
        "commit": commit(),
        "command": command(),
        "date": now.isoformat(timespec="seconds"),
        "environment": settings(),
        **figures,
    }
    folder = folder or Path(os.environ.get("BENCH_RECORD_DIR") or RESULTS)
    folder.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", record["device"].lower()).strip("-")
    path = folder / f"{now:%Y%m%dT%H%M%SZ}_{benchmark}_{slug}.json"
    path.write_text(json.dumps(record, indent=2, default=_plain) + "\n")
    print(f"record: {path}", flush=True)
    return path
