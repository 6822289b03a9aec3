"""facehd models."""
