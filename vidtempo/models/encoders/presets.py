"""Named encoder sizes as builder functions: ``tiny_*`` for tests and the real-size towers the methods use.

Every builder returns a randomly initialised module (no download; it also builds under
``with torch.device("meta"):`` for parameter counting). Load real weights with the encoder's
``load_pretrained(local_dir_or_file)``. Keyword arguments go to the encoder class; a ``config`` dict is
merged over the preset's architecture.

Architecture numbers are from the public config.json files on the Hugging Face hub (cited per preset).
"""

from __future__ import annotations

from typing import Any

from vidtempo.models.encoders.hf_vision import ClipEncoder, Dinov2Encoder, SiglipEncoder
from vidtempo.models.encoders.timm_vision import TimmEncoder
from vidtempo.models.encoders.whisper import WhisperAudioEncoder

# huggingface.co/google/siglip-so400m-patch14-384/blob/main/config.json (vision_config): 428M with the
# attention-pooling head (the head is kept so released checkpoints load strictly; features skip it).
SIGLIP_SO400M = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "image_size": 384,
    "patch_size": 14,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
}
# huggingface.co/facebook/dinov2-giant/blob/main/config.json: SwiGLU MLP, 1.14B parameters.
DINOV2_GIANT = {
    "hidden_size": 1536,
    "num_hidden_layers": 40,
    "num_attention_heads": 24,
    "mlp_ratio": 4,
    "use_swiglu_ffn": True,
    "patch_size": 14,
    "image_size": 518,
    "layerscale_value": 1.0,
    "layer_norm_eps": 1e-6,
}
# huggingface.co/openai/clip-vit-large-patch14-336/blob/main/config.json (vision_config): 303M.
CLIP_VIT_L14_336 = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 336,
    "patch_size": 14,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 768,
}
# huggingface.co/openai/whisper-small/blob/main/config.json: encoder 88M.
WHISPER_SMALL = {
    "d_model": 768,
    "encoder_layers": 12,
    "encoder_attention_heads": 12,
    "encoder_ffn_dim": 3072,
    "decoder_layers": 12,
    "decoder_attention_heads": 12,
    "decoder_ffn_dim": 3072,
    "num_mel_bins": 80,
    "max_source_positions": 1500,
    "max_target_positions": 448,
    "vocab_size": 51865,
    "pad_token_id": 50257,
    "bos_token_id": 50257,
    "eos_token_id": 50257,
    "decoder_start_token_id": 50258,
}
# huggingface.co/openai/whisper-large-v3/blob/main/config.json: 128 mel bins, encoder 637M.
WHISPER_LARGE_V3 = {
    "d_model": 1280,
    "encoder_layers": 32,
    "encoder_attention_heads": 20,
    "encoder_ffn_dim": 5120,
    "decoder_layers": 32,
    "decoder_attention_heads": 20,
    "decoder_ffn_dim": 5120,
    "num_mel_bins": 128,
    "max_source_positions": 1500,
    "max_target_positions": 448,
    "vocab_size": 51866,
    "pad_token_id": 50256,
    "bos_token_id": 50257,
    "eos_token_id": 50257,
    "decoder_start_token_id": 50258,
}
TINY_SIGLIP = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}
# Real front end and conv strides (1500 steps per 30 s), tiny width/depth. The decoder ids must be set
# explicitly for a small vocabulary (else "Padding_idx must be within num_embeddings").
TINY_WHISPER = {
    "d_model": 32,
    "encoder_layers": 2,
    "encoder_attention_heads": 2,
    "encoder_ffn_dim": 64,
    "decoder_layers": 1,
    "decoder_attention_heads": 2,
    "decoder_ffn_dim": 64,
    "num_mel_bins": 80,
    "max_source_positions": 1500,
    "max_target_positions": 32,
    "vocab_size": 64,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "decoder_start_token_id": 1,
}


def _merged(base: dict[str, Any], kw: dict[str, Any]) -> dict[str, Any]:
    """Pop ``config`` from ``kw`` and return the preset architecture with it merged on top."""
    return {**base, **dict(kw.pop("config", None) or {})}


def tiny_vision_encoder(**kw: Any) -> SiglipEncoder:
    """Tiny random SigLIP tower: 32x32 input, patch 8 (4x4 grid), width 32, 2 layers, 2 heads.

    Example:
        >>> import torch
        >>> feats, grid = tiny_vision_encoder().encode(torch.rand(2, 3, 32, 32))
        >>> tuple(feats.shape), grid
        ((2, 16, 32), (4, 4))
    """
    return SiglipEncoder(_merged(TINY_SIGLIP, kw), **kw)


def tiny_audio_encoder(**kw: Any) -> WhisperAudioEncoder:
    """Tiny random Whisper encoder (width 32, 2 layers) with the real 30-s / 20-ms geometry."""
    return WhisperAudioEncoder(_merged(TINY_WHISPER, kw), **kw)


def siglip_so400m(**kw: Any) -> SiglipEncoder:
    """google/siglip-so400m-patch14-384 vision tower: 384 px, 27x27 grid, width 1152 (TDC: ``pool_to=24``)."""
    return SiglipEncoder(_merged(SIGLIP_SO400M, kw), **kw)


def dinov2_giant(**kw: Any) -> Dinov2Encoder:
    """facebook/dinov2-giant: width 1536, patch 14, native 518 px (TDC: ``image_size=378, pool_to=24``)."""
    return Dinov2Encoder(_merged(DINOV2_GIANT, kw), **kw)


def clip_vit_l14(**kw: Any) -> ClipEncoder:
    """openai/clip-vit-large-patch14-336 vision tower: 336 px, 24x24 grid, width 1024."""
    return ClipEncoder(_merged(CLIP_VIT_L14_336, kw), **kw)


def eva02_clip_l(**kw: Any) -> TimmEncoder:
    """timm ``eva02_large_patch14_clip_336`` (EVA02-CLIP-L/14 image tower): 336 px, 24x24 grid, width 1024."""
    return TimmEncoder("eva02_large_patch14_clip_336", **kw)


def whisper_small(**kw: Any) -> WhisperAudioEncoder:
    """openai/whisper-small encoder: 80 mels, width 768, 12 layers."""
    return WhisperAudioEncoder(_merged(WHISPER_SMALL, kw), **kw)


def whisper_large_v3(**kw: Any) -> WhisperAudioEncoder:
    """openai/whisper-large-v3 encoder: 128 mels, width 1280, 32 layers."""
    return WhisperAudioEncoder(_merged(WHISPER_LARGE_V3, kw), **kw)
