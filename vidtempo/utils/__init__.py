"""Small helpers shared by every layer (no model, data or training code)."""
