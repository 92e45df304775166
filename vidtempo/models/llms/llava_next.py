"""The language model of a LLaVA-NeXT checkpoint (``LlavaNextForConditionalGeneration``) as vidtempo's LLM.

DaMO feeds its own video tokens to LLaVA-v1.6-Mistral-7B's language model; LLaVA's CLIP tower, projector and
``image_newline`` are not used. :class:`LlavaNextLanguageModel` is an :class:`HFCausalLM` built from the text
config (offline, meta-device friendly) whose :meth:`~LlavaNextLanguageModel.load_pretrained` reads only the
language-model tensors of a LLaVA-NeXT directory, in either layout:

* ``language_model.model.*`` + ``language_model.lm_head.*`` (the ``llava-hf`` hub checkpoints; also what
  transformers' ``save_pretrained`` writes);
* ``model.language_model.*`` + ``lm_head.*`` (the in-memory layout of recent transformers).

:func:`llava_next_tokenizer` loads the checkpoint's tokenizer with a Mistral-instruct chat template over
string contents (``[INST] user [/INST] answer</s>``, the LLaMA-2 style of LLaVA's ``conv_mistral_instruct``;
``llava-hf/llava-v1.6-mistral-7b-hf``'s model card gives the prompt ``"[INST] <image>\\nWhat is shown in this
image? [/INST]"``). The processor's own template iterates over lists of content parts, which vidtempo's
collator does not produce, so it is replaced.

Example:
    >>> llm = llava_v1_6_mistral_7b(meta=True)
    >>> llm.hidden_size, llm.config.vocab_size, llm.config.model_type
    (4096, 32064, 'mistral')
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from vidtempo.models.llms.hf import HFCausalLM

# llava-hf/llava-v1.6-mistral-7b-hf: text model = Mistral-7B-Instruct-v0.2 (liuhaotian/llava-v1.6-mistral-7b
# model card) with its vocabulary padded to 32064 rows (<image> = 32000, <pad> = 32001: added_tokens.json;
# 32064 logits: VectorInstitute/vector-inference vec_inf/models/llava-v1.6/config.sh).
LLAVA_V16_MISTRAL_7B: dict[str, Any] = {
    "model_type": "mistral", "vocab_size": 32064, "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False, "sliding_window": None,
}  # fmt: skip
LLAVA_V16_MISTRAL_7B_ID = "llava-hf/llava-v1.6-mistral-7b-hf"

# [INST] ... [/INST] with string contents; a system turn is folded into the first user turn (LLaMA-2 <<SYS>>).
MISTRAL_INST_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% set system = namespace(text='') %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set system.text = '<<SYS>>\n' + message['content'] + '\n<</SYS>>\n\n' %}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' + system.text + message['content'] + ' [/INST]' }}"
    "{% set system.text = '' %}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + (eos_token or '') }}"
    "{% endif %}{% endfor %}"
)

# (prefix in the LLaVA-NeXT checkpoint, prefix in the causal LM) per layout; the first layout that has the
# embedding table wins.
_LAYOUTS = (
    (("language_model.model.", "model."), ("language_model.lm_head.", "lm_head.")),
    (("model.language_model.", "model."), ("lm_head.", "lm_head.")),
)
_ARCH_KEYS = ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
              "num_attention_heads", "num_key_value_heads")  # fmt: skip


class LlavaNextLanguageModel(HFCausalLM):
    """An :class:`HFCausalLM` whose weights come from a LLaVA-NeXT checkpoint directory.

    Args:
        name_or_path: the LLaVA-NeXT directory (default weights source of :meth:`load_pretrained`).
        config: the text model's config (``model_type`` included); None = the directory's ``text_config``.
        attn_implementation, gradient_checkpointing: as :class:`HFCausalLM`.

    Example:
        >>> tiny = {"model_type": "mistral", "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32,
        ...         "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1}
        >>> LlavaNextLanguageModel("unused/dir", config=tiny).hidden_size
        16
    """

    def __init__(
        self,
        name_or_path: str | None = None,
        *,
        config: dict[str, Any] | None = None,
        attn_implementation: str = "sdpa",
        gradient_checkpointing: bool = False,
    ) -> None:
        if config is None:
            if name_or_path is None:
                raise ValueError("LlavaNextLanguageModel needs a config dict or a LLaVA-NeXT directory")
            config = text_config(Path(name_or_path))
        super().__init__(name_or_path, config=config, attn_implementation=attn_implementation,
                         gradient_checkpointing=gradient_checkpointing)  # fmt: skip

    def load_pretrained(self, path: str | Path | None = None, *, dtype: torch.dtype | None = None,
                        device: torch.device | str | None = None) -> None:  # fmt: skip
        """Load the language-model tensors of the LLaVA-NeXT directory ``path`` (default ``name_or_path``), tensor
        by tensor into ``dtype`` on ``device`` (``vidtempo.models.weights``; vision tower and projector unread).

        Raises:
            FileNotFoundError: no such directory, or no weights in it.
            ValueError: not a LLaVA-NeXT checkpoint, a different text architecture, or missing tensors.
        """
        from vidtempo.models.weights import load_weights

        source = Path(str(path or self.name_or_path or ""))
        check_text_config(text_config(source), self.model.config, source)
        files = _weight_files(source)
        layout = language_model_layout(source, files)
        load_weights(self.model, files, dtype=dtype, device=device, rename=lambda k: _renamed(k, layout),
                     optional=lambda k: "rotary_emb" in k)  # fmt: skip


def text_config(path: Path) -> dict[str, Any]:
    """The ``text_config`` of a LLaVA-NeXT ``config.json`` (a one-line error for anything else)."""
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"'{path}' is not a local LLaVA-NeXT checkpoint directory (no config.json); "
                                f"download e.g. {LLAVA_V16_MISTRAL_7B_ID} to a directory first")  # fmt: skip
    cfg = json.loads(cfg_file.read_text())
    if cfg.get("model_type") != "llava_next" or not isinstance(cfg.get("text_config"), dict):
        raise ValueError(f"{cfg_file}: model_type is {cfg.get('model_type')!r}, expected 'llava_next' with a "
                         "text_config (a LlavaNextForConditionalGeneration checkpoint)")  # fmt: skip
    text = dict(cfg["text_config"])
    text.setdefault("model_type", "llama")
    return {
        k: v for k, v in text.items() if not k.startswith("_") and k not in ("architectures", "torch_dtype")
    }


def check_text_config(text: dict[str, Any], ours: Any, path: Path) -> None:
    """Raise ``ValueError`` naming the first architecture key where the checkpoint and the model differ."""
    for key in _ARCH_KEYS:
        if key in text and text[key] != getattr(ours, key, None):
            raise ValueError(f"{path / 'config.json'}: text_config.{key}={text[key]!r} but the LLM was built "
                             f"with {key}={getattr(ours, key, None)!r}")  # fmt: skip


def _weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return [path / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{path}: no model.safetensors(.index.json): LLaVA-NeXT weights are needed")
    return files


def language_model_layout(path: Path, files: list[Path]) -> tuple[tuple[str, str], ...]:
    """The (checkpoint prefix, causal-LM prefix) pairs of the layout the files of ``path`` use."""
    from vidtempo.models.weights import SafetensorsReader

    reader = SafetensorsReader(files)
    every = set(reader.keys())
    layout = next((lay for lay in _LAYOUTS if f"{lay[0][0]}embed_tokens.weight" in every), None)
    if layout is None:
        raise ValueError(f"{path}: no language-model embedding under 'language_model.model.' or "
                         "'model.language_model.' (not a LlavaNextForConditionalGeneration checkpoint)")  # fmt: skip
    return layout


def _renamed(key: str, layout: tuple[tuple[str, str], ...]) -> str | None:
    for old, new in layout:
        if key.startswith(old):
            return new + key[len(old) :]
    return None  # vision tower, projector, image_newline: not the language model's


def read_language_model(path: Path) -> dict[str, torch.Tensor]:
    """The language-model tensors of a LLaVA-NeXT directory, renamed to a causal LM's keys (vision tower,
    projector and ``image_newline`` are never read)."""
    from vidtempo.models.weights import SafetensorsReader

    files = _weight_files(path)
    layout = language_model_layout(path, files)
    reader = SafetensorsReader(files)
    state: dict[str, torch.Tensor] = {}
    try:
        for name, (_, dtype, shape, *_rest) in reader.entries.items():
            new = _renamed(name, layout)
            if new is not None:
                state[new] = torch.empty(shape, dtype=dtype)
                reader.read_into(name, state[new])
    finally:
        reader.close()
    return state


def llava_v1_6_mistral_7b(
    name_or_path: str | None = None, meta: bool = False, config: dict[str, Any] | None = None, **kw: Any
) -> LlavaNextLanguageModel:
    """LLaVA-v1.6-Mistral-7B's language model (7.2 B parameters), shaped from the public config so
    ``vidtempo inspect`` builds it offline; weights from the LLaVA-NeXT directory ``name_or_path`` on
    ``load_pretrained``. ``meta=True`` builds it on the meta device (no memory); ``config`` keys are merged over
    the preset (e.g. a reduced depth)."""
    arch = {**LLAVA_V16_MISTRAL_7B, **(config or {})}
    with torch.device("meta") if meta else nullcontext():
        return LlavaNextLanguageModel(name_or_path or LLAVA_V16_MISTRAL_7B_ID, config=arch, **kw)


def llava_next_tokenizer(name_or_path: str, chat_template: str | None = None, time_tokens: int = 0) -> Any:
    """The tokenizer of a local LLaVA-NeXT directory with :data:`MISTRAL_INST_TEMPLATE` (or ``chat_template``)
    and a pad token (``time_tokens``: ``vidtempo.models.tokenizers.add_time_tokens``); never downloads.

    Example:
        >>> from vidtempo.models.tokenizers import tiny_tokenizer
        >>> import tempfile
        >>> d = tempfile.mkdtemp(); tiny_tokenizer().save_pretrained(d)  # doctest: +ELLIPSIS
        (...)
        >>> tok = llava_next_tokenizer(d)
        >>> tok.apply_chat_template([{"role": "user", "content": "When?"}], tokenize=False).endswith("[INST] When? [/INST]")
        True
    """
    from vidtempo.models.tokenizers import load_tokenizer

    tok = load_tokenizer(name_or_path, time_tokens=time_tokens)
    tok.chat_template = chat_template or MISTRAL_INST_TEMPLATE
    return tok
