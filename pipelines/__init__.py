"""facehd pipelines."""
