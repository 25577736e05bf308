"""negopt: learn negative prompts for text-to-image models."""
__version__ = "0.1.0"
