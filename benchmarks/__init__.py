"""facehd benchmarks."""
