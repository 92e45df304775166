"""Shared pieces of the serving tests: tiny checkpoints of the tiny recipes' models, saved and loaded through
the real path, and a real uvicorn server on a free localhost port inside the test process."""

from __future__ import annotations

import copy
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
# the model of each tiny recipe the serving tests use
RECIPES = {"pool": "recipes/tiny/sft_pool.yaml", "tdc": "recipes/tiny/tdc_synth.yaml",
           "qwen": "recipes/tiny/tempo_qwen25vl.yaml"}  # fmt: skip


def recipe_dict(kind: str) -> dict[str, Any]:
    """The tiny recipe's YAML as a dict (not resolved: its data sections are replaced by the tests)."""
    return yaml.safe_load((REPO / RECIPES[kind]).read_text())


def save_checkpoint(cfg: dict[str, Any], out: Path, seed: int = 0) -> Path:
    """Build the recipe's model (random weights, seeded) and its tokenizer, save both as a checkpoint."""
    import torch

    from vidtempo.config.instantiate import instantiate
    from vidtempo.models.build import build_video_llm
    from vidtempo.models.checkpoint import save_pretrained

    torch.manual_seed(seed)
    node = copy.deepcopy(cfg["model"])
    tokenizer = instantiate(cfg.get("tokenizer") or {"_target_": "tiny"}, key="tokenizer")
    save_pretrained(build_video_llm(node), out, model_config=node, tokenizer=tokenizer)
    return out


@contextmanager
def serving(service: Any) -> Iterator[str]:
    """Run ``create_app(service)`` with uvicorn on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    import uvicorn

    from vidtempo.serving.app import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(create_app(service), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the in-process server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="session")
def helpers() -> Any:
    """These helpers for the test modules (test files import nothing from each other)."""
    from types import SimpleNamespace

    return SimpleNamespace(recipe_dict=recipe_dict, save_checkpoint=save_checkpoint, serving=serving)
