"""hat: byte-level hierarchical language models (HAT) in JAX / Flax NNX."""

__version__ = "0.1.0"
