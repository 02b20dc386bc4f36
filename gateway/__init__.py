"""Flask gateway in front of TorchServe (see the gateway issue)."""
