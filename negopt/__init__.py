"""negopt: learn negative prompts for text-to-image models.

``from negopt import NegativePromptGenerator`` is the Python API (negopt/policy/decode.py); it is imported
lazily so that ``import negopt.<module>`` in every stage stays free of torch and transformers.
"""

__version__ = "0.1.0"
__all__ = ["NegativePromptGenerator"]


def __getattr__(name: str):
    if name == "NegativePromptGenerator":
        from negopt.policy.decode import NegativePromptGenerator

        return NegativePromptGenerator
    raise AttributeError(f"module 'negopt' has no attribute {name!r}")
