"""The training pipeline: sources, mixer, labels, training loop, evaluation.

Serving never imports this package; only `vadnet train` and `vadnet eval` do, lazily.
"""
