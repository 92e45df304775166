"""Token compressors: per-frame features -> video token sequence (see ``interfaces.TokenCompressor``)."""
