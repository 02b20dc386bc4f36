"""woof training pipeline: data -> model -> objective -> loop -> evaluate -> export (see docs/architecture.md)."""
