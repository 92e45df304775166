"""Q-Former: a thin wrapper around transformers' ``InstructBlipQFormerModel`` (BERT layers with
cross-attention every ``cross_attention_frequency`` layers, instruction text sharing self-attention with the
queries), plus a BERT-style tokenizer for its text input.

TDC (arXiv 2504.10443, released code ``tdc/cambrian_arch.py init_Qformer``) uses a BERT-base Q-Former
(12 layers, width 768, 12 heads, cross-attention in layers 0, 2, ..., 10) whose cross-attention reads
LLM-width frame tokens, initialised from ``bert-base-uncased`` (``docs/methods/tdc.md``). Nothing here downloads:

* :class:`QFormer` builds a randomly initialised model from a preset (``"bert_base"``, ``"tiny"``) and/or a
  config dict; :meth:`QFormer.load_pretrained` copies the weights of a local BERT checkpoint directory
  (``save_pretrained`` output or a hub snapshot of ``bert-base-uncased``) into it.
* :func:`tiny_qformer_tokenizer` trains a small lower-cased WordPiece tokenizer locally (tests, CPU recipes);
  :func:`load_qformer_tokenizer` reads a real one (e.g. ``bert-base-uncased``) from a local directory.

Example:
    >>> import torch
    >>> qf = QFormer(encoder_width=48, preset="tiny")
    >>> tok = tiny_qformer_tokenizer()
    >>> text = tok(["when is the red circle visible?"], return_tensors="pt")
    >>> out = qf(torch.randn(1, 4, qf.hidden_size), torch.randn(1, 10, 48), text["input_ids"],
    ...          text["attention_mask"])
    >>> tuple(out.shape)  # (N, K, qformer hidden): the query positions only
    (1, 4, 32)
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

# huggingface.co/google-bert/bert-base-uncased/blob/main/config.json (+ cross_attention_freq=2, LAVIS/TDC).
QFORMER_BERT_BASE: dict[str, Any] = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
    "cross_attention_frequency": 2,
}
QFORMER_TINY: dict[str, Any] = {
    **QFORMER_BERT_BASE,
    "vocab_size": 512,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}
QFORMER_PRESETS: dict[str, dict[str, Any]] = {"bert_base": QFORMER_BERT_BASE, "tiny": QFORMER_TINY}

# Architecture fields a BERT checkpoint must share with the Q-Former it initialises.
_ARCH_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


class QFormer(nn.Module):
    """BERT-style Q-Former (``InstructBlipQFormerModel``) returning the query positions of its last layer.

    Args:
        encoder_width: width of the states the cross-attention reads (TDC: the LLM hidden size).
        preset: ``"bert_base"`` (TDC's, 12 x 768) or ``"tiny"`` (2 x 32, tests).
        config: ``InstructBlipQFormerConfig`` fields merged over the preset (e.g. ``{"num_hidden_layers": 6}``).
        vocab_size: override the vocabulary size (set it to ``len(tokenizer)``).

    Example:
        >>> import torch
        >>> qf = QFormer(encoder_width=16, preset="tiny", config={"cross_attention_frequency": 1})
        >>> qf(torch.randn(2, 3, 32), torch.randn(2, 5, 16)).shape  # no text input
        torch.Size([2, 3, 32])
    """

    def __init__(
        self,
        encoder_width: int,
        preset: str = "bert_base",
        config: Mapping[str, Any] | None = None,
        vocab_size: int | None = None,
    ) -> None:
        super().__init__()
        if preset not in QFORMER_PRESETS:
            raise ValueError(
                f"QFormer: unknown preset '{preset}'; valid presets: {', '.join(QFORMER_PRESETS)}"
            )
        from transformers import InstructBlipQFormerConfig, InstructBlipQFormerModel

        fields = {**QFORMER_PRESETS[preset], **dict(config or {})}
        if vocab_size is not None:
            fields["vocab_size"] = int(vocab_size)
        unknown = sorted(k for k in fields if not hasattr(InstructBlipQFormerConfig(), k))
        if unknown:
            raise ValueError(f"QFormer: unknown config key(s) {unknown} for InstructBlipQFormerConfig")
        cfg = InstructBlipQFormerConfig(**fields, encoder_hidden_size=int(encoder_width))
        self.model = InstructBlipQFormerModel(cfg)
        self.hidden_size = int(cfg.hidden_size)
        self.encoder_width = int(encoder_width)

    @property
    def vocab_size(self) -> int:
        return int(self.model.embeddings.word_embeddings.num_embeddings)

    def resize_vocab(self, size: int) -> None:
        """Resize the word embeddings to ``size`` rows (TDC resizes to the tokenizer's length)."""
        if size != self.vocab_size:
            self.model.resize_token_embeddings(size, mean_resizing=False)

    def forward(
        self,
        query_embeds: torch.Tensor,
        encoder_states: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the Q-Former; return its last-layer states at the query positions.

        Args:
            query_embeds: (N, K, Hq) query embeddings.
            encoder_states: (N, E, encoder_width) states read by cross-attention (no padding).
            input_ids: optional (N, L) instruction token ids, sharing self-attention with the queries.
            text_mask: (N, L) 1 = real token, 0 = padding; default all ones.

        Returns:
            (N, K, Hq) query outputs.
        """
        n, k, _ = query_embeds.shape
        mask = None
        if input_ids is not None:
            if text_mask is None:
                text_mask = torch.ones_like(input_ids)
            query_mask = torch.ones(n, k, dtype=text_mask.dtype, device=text_mask.device)
            mask = torch.cat([query_mask, text_mask], dim=1)  # (N, K + L)
        dtype = self.model.embeddings.layernorm.weight.dtype
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            query_embeds=query_embeds.to(dtype),
            encoder_hidden_states=encoder_states.to(dtype),
        )
        return out.last_hidden_state[:, :k]  # (N, K, Hq)

    def load_pretrained(self, local_dir: str | Path, copy_query_ffn: bool = True) -> QFormer:
        """Initialise from a local BERT checkpoint directory (``bert-base-uncased`` style); returns ``self``.

        Self-attention, embeddings and feed-forward weights are copied; cross-attention layers stay random (as
        in TDC/BLIP-2). With ``copy_query_ffn`` the query-branch feed-forward (``intermediate_query``,
        ``output_query``) is also initialised from the text feed-forward, as LAVIS's BLIP-2 does
        [CODE-ANCHOR salesforce/LAVIS blip2_qformer.py]. Vocabulary rows are copied up to the smaller size.

        Raises:
            FileNotFoundError: ``local_dir`` lacks config.json or a weights file.
            ValueError: the checkpoint's architecture differs, or a needed BERT weight is missing.
        """
        path = Path(local_dir)
        bert_cfg = _read_bert_config(path)
        ours = self.model.config
        for key in _ARCH_KEYS:
            if key in bert_cfg and bert_cfg[key] != getattr(ours, key):
                raise ValueError(
                    f"QFormer.load_pretrained: {path / 'config.json'} has {key}={bert_cfg[key]!r} but this "
                    f"Q-Former has {key}={getattr(ours, key)!r}; build it with preset/config to match"
                )
        state = _normalise_bert_keys(_read_state_dict(path))
        own = self.model.state_dict()
        new_state: dict[str, torch.Tensor] = {}
        missing = []
        for name in own:
            if ".crossattention." in name:
                continue
            source = _bert_name(name, copy_query_ffn)
            if source is None:
                continue
            if source not in state:
                missing.append(source)
                continue
            new_state[name] = _fit(state[source], own[name], name)
        if missing:
            raise ValueError(
                f"QFormer.load_pretrained: {path} lacks {len(missing)} BERT weight(s), e.g. {missing[:3]}"
            )
        self.model.load_state_dict(new_state, strict=False)
        return self


def _bert_name(name: str, copy_query_ffn: bool) -> str | None:
    """BERT checkpoint key for one Q-Former parameter name (None = not initialised from BERT)."""
    if name == "embeddings.position_ids":
        return None
    name = name.replace("embeddings.layernorm.", "embeddings.LayerNorm.")
    name = name.replace(".attention.attention.", ".attention.self.")
    if "_query." in name:
        if not copy_query_ffn:
            return None
        name = name.replace("intermediate_query.", "intermediate.").replace("output_query.", "output.")
    return name


def _normalise_bert_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a leading ``bert.`` (BertForMaskedLM/PreTraining) and map old ``gamma``/``beta`` names."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("bert.")
        key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key)
        key = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)
        out[key] = value
    return out


def _fit(source: torch.Tensor, target: torch.Tensor, name: str) -> torch.Tensor:
    """Copy ``source`` into a tensor shaped like ``target``; only the vocabulary axis may differ."""
    if source.shape == target.shape:
        return source.to(target.dtype)
    if name == "embeddings.word_embeddings.weight" and source.shape[1:] == target.shape[1:]:
        rows = min(source.shape[0], target.shape[0])
        out = target.clone()
        out[:rows] = source[:rows].to(target.dtype)
        return out
    raise ValueError(
        f"QFormer.load_pretrained: weight '{name}' has shape {tuple(source.shape)} in the checkpoint, "
        f"expected {tuple(target.shape)}"
    )


def _read_bert_config(path: Path) -> dict[str, Any]:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(
            f"QFormer.load_pretrained: '{path}' is not a local BERT directory (expected config.json plus "
            "model.safetensors or pytorch_model.bin, e.g. a snapshot of bert-base-uncased)"
        )
    return json.loads(cfg_file.read_text())


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    safe = sorted(path.glob("*.safetensors"))
    if safe:
        from safetensors.torch import load_file

        state: dict[str, torch.Tensor] = {}
        for file in safe:
            state.update(load_file(str(file)))
        return state
    binary = path / "pytorch_model.bin"
    if binary.is_file():
        return torch.load(binary, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"QFormer.load_pretrained: no *.safetensors or pytorch_model.bin in '{path}'")


# ----------------------------------------------------------------------------------------------- tokenizers
# Words the synthetic tasks and tests ask about; enough for a WordPiece vocabulary that rarely emits [UNK].
_QFORMER_CORPUS = """
when is the red green blue yellow circle square triangle star visible on screen appear appears disappear
which of these happens first last before after during while then between from to at and or not
how many high low beeps beep sound sounds are there what does do did who where why moves left right up down
describe the video segment in detail summarize key information relevant to answering question answer
scene cut frame frames second seconds time clip start end begin begins ends long short fast slow
a an the it this that of in on with by for is are was were be been one two three four five six seven
0 1 2 3 4 5 6 7 8 9 . , : ; ? ! - ( ) ' " / options option best choose letter man woman person
"""
_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@functools.lru_cache(maxsize=4)
def _train_wordpiece(vocab_size: int) -> str:
    """The tiny WordPiece vocabulary, built without the ``tokenizers`` trainer.

    ``WordPieceTrainer`` breaks ties between equally frequent merges in hash-map order, which changes from one
    process to the next: a model trained in one process then read its instructions with other token ids when
    evaluated in another. Here the vocabulary is fixed: the specials, every character of the corpus (alone
    and as a ``##`` continuation), then whole words by frequency (ties alphabetical), up to ``vocab_size``.
    """
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    normalizer, splitter = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for line in _QFORMER_CORPUS.splitlines():
        words.update(w for w, _ in splitter.pre_tokenize_str(normalizer.normalize_str(line)))
    chars = sorted({c for w in words for c in w})
    vocab_list = [*_SPECIALS, *chars, *(f"##{c}" for c in chars)]
    known = set(vocab_list)
    ranked = sorted((w for w in words if w not in known), key=lambda w: (-words[w], w))
    vocab_list += ranked[: max(0, vocab_size - len(vocab_list))]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab_list)}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizer, splitter, decoders.WordPiece()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tok.to_str()


def tiny_qformer_tokenizer(vocab_size: int = 512) -> Any:
    """A lower-cased BERT-style WordPiece tokenizer trained locally (deterministic, no download).

    ``[PAD]`` is id 0 (the Q-Former's ``pad_token_id``); every text is wrapped as ``[CLS] ... [SEP]``.

    Example:
        >>> tok = tiny_qformer_tokenizer()
        >>> tok.convert_ids_to_tokens(tok("Red circle?")["input_ids"])
        ['[CLS]', 'red', 'circle', '?', '[SEP]']
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_train_wordpiece(vocab_size)),
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def load_qformer_tokenizer(name_or_path: str | Path) -> Any:
    """Load a BERT-style tokenizer from a local directory (e.g. a ``bert-base-uncased`` snapshot); no download."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(name_or_path), local_files_only=True)
    except OSError as err:
        raise FileNotFoundError(
            f"Q-Former tokenizer '{name_or_path}' is not available offline: give a local directory holding "
            "tokenizer files (e.g. bert-base-uncased) or use 'tiny'"
        ) from err


def build_qformer_tokenizer(spec: Any) -> Any:
    """``"tiny"`` -> :func:`tiny_qformer_tokenizer`; another string/Path -> a local directory; else as given."""
    if isinstance(spec, str) and spec == "tiny":
        return tiny_qformer_tokenizer()
    if isinstance(spec, (str, Path)):
        return load_qformer_tokenizer(spec)
    if not callable(spec):
        raise ValueError(f"Q-Former tokenizer must be 'tiny', a local directory or a tokenizer, got {spec!r}")
    return spec
