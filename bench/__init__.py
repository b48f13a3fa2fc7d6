"""tradewire benchmark suite: `python -m bench.run --help`."""
