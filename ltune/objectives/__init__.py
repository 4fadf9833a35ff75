"""ltune package."""
