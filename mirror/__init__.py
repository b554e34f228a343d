"""model-mirror: a local mirror and pull-through cache for the Hugging Face Hub."""

__version__ = "0.1.0"
