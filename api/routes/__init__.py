"""Route modules; each exposes ``router`` (mounted under ``/api/v1`` except health)."""
