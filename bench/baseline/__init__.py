"""The naive baseline server the benchmark suite measures tradewire against."""
