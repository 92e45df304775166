"""Chat-template tokenisation with the ``<video>`` placeholder and assistant-only labels.

The conversation is rendered with ``tokenizer.apply_chat_template`` turn by turn; text that belongs to an
assistant turn (content + end-of-turn marker) gets labels, everything else ``IGNORE_INDEX``. The
``<video>`` placeholder becomes the single id ``VIDEO_TOKEN_INDEX``; the model splices video tokens there.

Example:
    >>> from vidtempo.models.tokenizers import tiny_tokenizer
    >>> enc = ChatEncoder(tiny_tokenizer())
    >>> ids, labels = enc.encode([{"role": "user", "content": "<video>\\nWhen?"},
    ...                           {"role": "assistant", "content": "1.0 - 2.0 seconds"}])
    >>> VIDEO_TOKEN_INDEX in ids and labels[0] == IGNORE_INDEX
    True
"""

from __future__ import annotations

from typing import Any

from vidtempo.data.samples import VIDEO_PLACEHOLDER

VIDEO_TOKEN_INDEX = -200  # same value as vidtempo.models.video_llm.VIDEO_TOKEN_INDEX
IGNORE_INDEX = -100
MEMO_SIZE = 200_000  # encoded conversations kept per encoder (a few hundred bytes each)


class ChatEncoder:
    """Turns messages into (input_ids, labels) lists.

    Args:
        tokenizer: a transformers tokenizer with a chat template.
        system_prompt: prepended as a system turn when the conversation has none.
        max_text_tokens: raise ``ValueError`` when the text alone is longer (the video is added later).

    Each encoder remembers the conversations it has encoded (up to ``MEMO_SIZE``), so a training epoch
    after the first does not render and tokenise them again; callers get fresh lists.
    """

    def __init__(
        self, tokenizer: Any, system_prompt: str | None = None, max_text_tokens: int | None = None,
        video_position: str = "keep",
    ) -> None:  # fmt: skip
        if video_position not in ("keep", "after_text"):
            raise ValueError(f"video_position must be 'keep' or 'after_text', got '{video_position}'")
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.max_text_tokens = max_text_tokens
        self.video_position = video_position
        # conversation -> (ids, labels): training revisits the same texts every epoch, and rendering the
        # chat template + tokenising is most of a DataLoader worker's time once the clips are cached
        self._memo: dict[tuple, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def _render(self, messages: list[dict[str, str]], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )

    def _ids(self, text: str) -> list[int]:
        out: list[int] = []
        for i, piece in enumerate(text.split(VIDEO_PLACEHOLDER)):
            if i:
                out.append(VIDEO_TOKEN_INDEX)
            if piece:
                out.extend(self.tokenizer(piece, add_special_tokens=False)["input_ids"])
        return out

    def with_system(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        if self.system_prompt and (not messages or messages[0]["role"] != "system"):
            return [{"role": "system", "content": self.system_prompt}, *messages]
        return list(messages)

    def segments(self, messages: list[dict[str, str]], generation_prompt: bool = False) -> list[tuple[str, bool]]:
        """Split the rendered conversation into (text, is_assistant_target) pieces."""
        messages = self.with_system(messages)
        pieces: list[tuple[str, bool]] = []
        done = ""
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prompt = self._render(messages[:i], generation_prompt=True)
            full = self._render(messages[: i + 1], generation_prompt=False)
            if not prompt.startswith(done) or not full.startswith(prompt):
                raise ValueError(
                    "the tokenizer's chat template is not prefix-consistent across turns; "
                    "cannot locate assistant turns for label masking"
                )
            pieces += [(prompt[len(done) :], False), (full[len(prompt) :], True)]
            done = full
        final = self._render(messages, generation_prompt=generation_prompt)
        if len(final) > len(done):
            pieces.append((final[len(done) :], False))
        return [(text, target) for text, target in pieces if text]

    def encode(
        self, messages: list[dict[str, str]], generation_prompt: bool = False, sample_id: str = ""
    ) -> tuple[list[int], list[int]]:
        """(input_ids, labels) for one conversation; the first user turn gets ``<video>`` if absent."""
        key = (generation_prompt, *(tuple(sorted((k, str(v)) for k, v in m.items())) for m in messages))
        if key not in self._memo:
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = self._encode(messages, generation_prompt)
        ids, labels = (list(x) for x in self._memo[key])
        if self.max_text_tokens is not None and len(ids) > self.max_text_tokens:
            raise ValueError(
                f"sample '{sample_id}': {len(ids)} text tokens exceed max_text_tokens={self.max_text_tokens}"
            )
        return ids, labels

    def _encode(self, messages: list[dict[str, str]], generation_prompt: bool) -> tuple[tuple[int, ...], ...]:
        messages = ensure_placeholder(messages)
        if self.video_position == "after_text":
            messages = move_placeholder_after_text(messages)
        ids: list[int] = []
        labels: list[int] = []
        for text, target in self.segments(messages, generation_prompt):
            piece = self._ids(text)
            ids += piece
            labels += piece if target else [IGNORE_INDEX] * len(piece)
        return tuple(ids), tuple(labels)


def ensure_placeholder(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Put ``<video>`` at the start of the first user turn when no message has it."""
    if any(VIDEO_PLACEHOLDER in m["content"] for m in messages):
        return messages
    out = [dict(m) for m in messages]
    for m in out:
        if m["role"] == "user":
            m["content"] = f"{VIDEO_PLACEHOLDER}\n{m['content']}"
            break
    return out


def move_placeholder_after_text(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Put ``<video>`` at the end of the turn that holds it: under causal attention the video tokens can
    then attend to the question (query-aware video tokens), instead of only the answer attending to both."""
    out = [dict(m) for m in messages]
    for m in out:
        if VIDEO_PLACEHOLDER in m["content"]:
            text = " ".join(m["content"].replace(VIDEO_PLACEHOLDER, " ").split())
            m["content"] = f"{text}\n{VIDEO_PLACEHOLDER}"
            break
    return out


def first_user_text(messages: list[dict[str, str]]) -> str:
    """The first user turn without the placeholder (TDC's Q-Former instruction input)."""
    for m in messages:
        if m["role"] == "user":
            return " ".join(m["content"].replace(VIDEO_PLACEHOLDER, " ").split())
    return ""
