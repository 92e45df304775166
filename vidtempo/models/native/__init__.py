"""Native Hugging Face video VLMs behind the ``VideoLLM`` contract (forward / generate / LoRA / checkpoints).

Modules are imported lazily: ``vidtempo.models.native.qwen2_5_vl`` holds the Qwen2.5-VL backbone and model,
``vidtempo.models.native.base`` helpers; the contract is ``vidtempo.models.interfaces.VideoModel``.
"""
