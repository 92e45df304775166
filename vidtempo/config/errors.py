"""The one error type of the recipe layer."""

from __future__ import annotations


class RecipeError(ValueError):
    """A recipe problem: names the recipe file, the key and what was expected."""

    def __init__(self, message: str, *, recipe: str | None = None, key: str | None = None) -> None:
        self.recipe = recipe
        self.key = key
        where = []
        if recipe:
            where.append(f"recipe {recipe}")
        if key:
            where.append(f"key '{key}'")
        prefix = f"{', '.join(where)}: " if where else ""
        super().__init__(prefix + message)
