"""Tokenizers: load a Hugging Face tokenizer offline, or train a tiny one locally (tests, CPU recipes).

Every tokenizer returned here has a chat template (ChatML is set when the tokenizer has none) and a pad
token. The ``<video>`` placeholder is NOT added to the vocabulary: the collator splits the rendered prompt
on it and inserts :data:`VIDEO_TOKEN_INDEX` (LLaVA's convention), so no embedding resize is needed.

``time_tokens: N`` (recipe ``tokenizer: {_target_: tiny, time_tokens: 100}``) adds ``<t_0>`` .. ``<t_{N-1}>`` as
special tokens, one id each, for the ``time_tokens`` timestamp codec (``vidtempo.data.timestamps``); training
then grows the LLM's embeddings to hold them (``VideoLLM(new_token_ids=...)``, :func:`time_token_ids`).

Example:
    >>> tok = tiny_tokenizer()
    >>> tok.decode(tok("12 - 17 seconds")["input_ids"])
    '12 - 17 seconds'
"""

from __future__ import annotations

import functools
import re
from typing import Any

from vidtempo.data.timestamps import time_token_names

_TIME_TOKEN = re.compile(r"<t_(\d+)>")

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# A small English corpus for the tiny tokenizer: the words the synthetic tasks and tests use.
_TINY_CORPUS = """
When is the red circle visible? The green square appears after the blue triangle. 12.4 - 17.0 seconds.
Which of these appears first? How many high beeps are there? Which shape is on screen when the low beep sounds?
What happens after the scene cut? A. B. C. D. E. Answer: the best answer is yellow circle square triangle
Describe the video segment in detail. The man is cooking in the kitchen and a woman opens the door.
from to between and at second seconds frame frames time video clip scene cut moves left right up down
one two three four five six seven eight nine ten zero none first last before after during while then
0 1 2 3 4 5 6 7 8 9 . , : ; ? ! - ( ) [ ] ' " / the a an is are was of in on it this that what who
You are a helpful assistant. The video lasts for 30.0 seconds and 16 frames are uniformly sampled from it.
These frames are located at 0.9s, 2.8s. Please answer the following questions related to this video.
"""


def _finish(tokenizer: Any) -> Any:
    if tokenizer.chat_template is None:
        tokenizer.chat_template = CHATML_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def add_time_tokens(tokenizer: Any, num_bins: int) -> Any:
    """Add ``<t_0>`` .. ``<t_{num_bins-1}>`` as special tokens (each encodes to one id); returns the tokenizer.

    Tokens already present (a reloaded checkpoint's tokenizer) are kept with their ids.

    Example:
        >>> tok = add_time_tokens(tiny_tokenizer(), 100)
        >>> len(tok("<t_17>", add_special_tokens=False)["input_ids"])
        1
    """
    if int(num_bins) < 0:
        raise ValueError(f"tokenizer.time_tokens must be >= 0, got {num_bins}")
    if num_bins:
        from tokenizers import AddedToken

        # added, not "special": decode(skip_special_tokens=True), what generation uses, keeps them
        tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in time_token_names(int(num_bins))])
    return tokenizer


def time_token_ids(tokenizer: Any) -> list[int]:
    """The ids of the tokenizer's ``<t_N>`` time tokens, in bin order (empty when it has none)."""
    vocab = tokenizer.get_added_vocab() if hasattr(tokenizer, "get_added_vocab") else {}
    found = sorted((int(m.group(1)), idx) for tok, idx in vocab.items() if (m := _TIME_TOKEN.fullmatch(tok)))
    return [idx for _, idx in found]


def load_tokenizer(name_or_path: str, time_tokens: int = 0) -> Any:
    """Load a tokenizer from a local directory or the local hub cache (never downloads); ``time_tokens``:
    :func:`add_time_tokens`."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name_or_path, local_files_only=True)
    except OSError as err:
        raise FileNotFoundError(
            f"tokenizer '{name_or_path}' is not available offline: give a local directory or use 'tiny'"
        ) from err
    return add_time_tokens(_finish(tok), time_tokens)


@functools.lru_cache(maxsize=4)
def _train_tiny(vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    # Digits one per token so numbers are learnable by tiny models; ByteLevel keeps spaces reversible.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([line for line in _TINY_CORPUS.splitlines() if line.strip()] * 4, trainer)
    return tok.to_str()


def tiny_tokenizer(vocab_size: int = 512, time_tokens: int = 0) -> Any:
    """A byte-level BPE tokenizer trained locally on a fixed corpus (deterministic, < 1 s, no download);
    ``time_tokens``: :func:`add_time_tokens`."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_train_tiny(vocab_size)),
        unk_token="<unk>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
    )
    tok.chat_template = CHATML_TEMPLATE
    return add_time_tokens(_finish(tok), time_tokens)

