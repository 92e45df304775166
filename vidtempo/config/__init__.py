"""Recipes: YAML loading over a ``_base_`` chain and CLI overrides, validation, and instantiation."""

from vidtempo.config.errors import RecipeError
from vidtempo.config.instantiate import instantiate
from vidtempo.config.load import load_recipe, save_recipe

__all__ = ["RecipeError", "instantiate", "load_recipe", "save_recipe"]
