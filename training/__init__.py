"""woof training pipeline: data, models, fine-tuning, evaluation and prediction."""

__version__ = "0.1.0"
