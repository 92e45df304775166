"""Causal LM backbones (any transformers ``AutoModelForCausalLM``) and named-size presets."""
