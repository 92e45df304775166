"""The Python snippets of docs/architecture.md run as written, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import torch

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def test_architecture_snippets_run():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 4
    namespace: dict = {}
    torch.manual_seed(0)
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    assert namespace["per_frame"](namespace["ids"], torch.ones_like(namespace["ids"]),
                                  video=namespace["video"]).num_video_tokens.tolist() == [4]  # fmt: skip
    assert list(namespace["objective"].aux) == ["bright"]
