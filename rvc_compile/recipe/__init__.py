"""The one typed schema of a recipe."""
