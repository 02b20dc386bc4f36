"""TorchServe image-classifier handler for woof archives (see the TorchServe issue)."""
