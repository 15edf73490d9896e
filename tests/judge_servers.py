"""Real OpenAI-compatible servers for the judge tests: ``transformers serve`` and llama-cpp-python's server.

``transformers serve`` gets a tiny model written here: a 1-layer Llama whose greedy output is a fixed,
valid verdict whatever the prompt (``llamavid_eval.judges.scripted``): a test must not download or train
anything and needs exact replies. llama-cpp-python's server (``tests/real_servers.sh``; not in CI: it
builds from source) serves a ``.gguf`` - the real SmolLM2 one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPLY_WORDS = ("{'pred':", "'yes',", "'score':", "5}")  # decoded with single spaces: a valid verdict
SPECIALS = ("<unk>", "<s>", "</s>", "<|assistant|>")
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['content'] }} {% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def write_verdict_model(out_dir: Path) -> Path:
    """A tiny Llama + word-level tokenizer in ``out_dir`` that always answers ``{'pred': 'yes', 'score': 5}``."""
    from llamavid_eval.judges.scripted import script_reply, word_level_llama

    tokens = (*SPECIALS, *REPLY_WORDS)
    tokenizer, model = word_level_llama(
        tokens,
        {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "additional_special_tokens": ["<|assistant|>"]},
        intermediate_size=8,
        num_attention_heads=1,
        num_key_value_heads=1,
        head_dim=len(tokens),
        pad_token_id=tokens.index("</s>"),
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    vocab = tokenizer.get_vocab()
    script_reply(model, [vocab[token] for token in ("<|assistant|>", *REPLY_WORDS, "</s>")])
    model.generation_config.eos_token_id = vocab["</s>"]
    model.generation_config.do_sample = False
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServedModel:
    """A running judge server process; ``stop()`` ends it by its PID."""

    process: subprocess.Popen
    url: str
    model: str
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_transformers_serve(model_dir: Path, log: Path, timeout: float = 120.0) -> ServedModel:
    """``transformers serve MODEL_DIR`` on 127.0.0.1 at a free port, once ``/health`` answers."""
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "transformers"),
        "serve",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--log-level",
        "info",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    return _start("transformers serve", command, env, port, "/health", str(model_dir), log, timeout)


#: What installs llama-cpp-python's server here; CPU only, built from source (~10-16 min on 2 cores).
LLAMA_CPP_INSTALL = "bash tests/real_servers.sh (pip install 'llama-cpp-python[server]==0.3.36')"


def start_llama_cpp_server(gguf: Path, log: Path, timeout: float = 120.0) -> ServedModel:
    """``python -m llama_cpp.server --model GGUF`` on 127.0.0.1 at a free port, once ``/v1/models`` answers.
    It serves the model under its path (the name it lists and answers under, whatever name is asked for)."""
    missing = [m for m in ("llama_cpp", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
               if importlib.util.find_spec(m) is None]  # fmt: skip
    if missing:
        raise RuntimeError(
            f"llama-cpp-python's server is not installed ({', '.join(missing)} missing): {LLAMA_CPP_INSTALL}"
        )
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return _start("llama_cpp.server", command, env, port, "/v1/models", str(gguf), log, timeout)


def _start(
    name: str, command: list[str], env: dict, port: int, ready: str, model: str, log: Path, timeout: float
) -> ServedModel:
    """Start ``command`` in its own session, logging to ``log``; return once ``ready`` answers 200."""
    handle = log.open("wb")
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    served = ServedModel(process, f"http://127.0.0.1:{port}/v1", model, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{served.log_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready}", timeout=2) as resp:
                if resp.status == 200:
                    return served
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    served.stop()
    raise RuntimeError(f"{name} not ready after {timeout:.0f} s:\n{served.log_text()[-3000:]}")


def chat(url: str, model: str, content: str, **extra: object) -> tuple[int, dict]:
    """One raw chat request (no openai client) - to see exactly what the server answers."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": content}], **extra}).encode()
    request = urllib.request.Request(f"{url}/chat/completions", body, {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")
