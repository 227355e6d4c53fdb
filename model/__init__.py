"""vadnet model package."""
