"""woof: the `woof` command and the shared core that every part uses (breeds, preprocessing, cards,
atomic files, child processes). The core imports neither torch nor timm, so the gateway, the bot and the
TorchServe handler can use it without the training stack."""

__version__ = "0.1.0"
