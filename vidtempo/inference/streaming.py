"""Token-by-token output of a batched ``generate`` call: a streamer that hands each row's new tokens to a
callback, and the incremental detokeniser that turns one row's tokens into text deltas.

The deltas of :class:`IncrementalText` concatenate to exactly ``tokenizer.decode(ids,
skip_special_tokens=True).strip()``, the text ``vidtempo infer`` prints: leading whitespace is dropped;
trailing whitespace, and everything from a byte sequence that is no character yet (``\\ufffd``), are held
back until later text confirms them (or the end).

Example:
    >>> from vidtempo.models.tokenizers import tiny_tokenizer
    >>> tok = tiny_tokenizer()
    >>> ids = tok(" when is the beep ", add_special_tokens=False)["input_ids"]
    >>> text = IncrementalText(tok)
    >>> deltas = [text.add(i) for i in ids] + [text.finish()]
    >>> "".join(deltas) == tok.decode(ids, skip_special_tokens=True).strip()
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transformers.generation.streamers import BaseStreamer


class RowStreamer(BaseStreamer):
    """Calls ``on_token(row, token_id)`` for every new token of every row of a batched ``generate``.

    ``generate`` first puts the prompt (skipped here), then one (B,) tensor per decoding step. Rows that have
    finished keep receiving padding; the caller decides where a row ends.
    """

    def __init__(self, on_token: Callable[[int, int], None]) -> None:
        self.on_token = on_token
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):  # (B,) or (B, 1)
            self.on_token(row, int(token))

    def end(self) -> None:
        """Nothing to flush: every token went to ``on_token`` as it came."""


class IncrementalText:
    """Text deltas of one growing sequence of token ids (see the module docstring)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.sent = ""  # what the deltas so far add up to

    def _text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True).lstrip()

    def add(self, token_id: int) -> str:
        """The new text that ``token_id`` confirms ("" while it is held back)."""
        self.ids.append(int(token_id))
        text = self._text()
        if "\ufffd" in text:  # bytes that are no character yet: hold them (and what follows) back
            text = text[: text.index("\ufffd")]
        text = text.rstrip()
        if not text.startswith(self.sent):  # a tokenizer that re-segments earlier text: wait for the end
            return ""
        delta, self.sent = text[len(self.sent) :], text
        return delta

    def finish(self, final: str | None = None) -> str:
        """The rest of the text; ``final`` (default: this sequence decoded and stripped) is the text the deltas
        must add up to."""
        text = self._text().strip() if final is None else final
        if not text.startswith(self.sent):
            raise ValueError(f"streamed text {self.sent!r} is not a prefix of the answer {text!r}")
        delta, self.sent = text[len(self.sent) :], text
        return delta
