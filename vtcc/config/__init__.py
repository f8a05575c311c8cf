"""A run's config: checked, resolved and stored (see each module)."""
