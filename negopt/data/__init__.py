"""Data: the negopt_full schema, sources (sample / hf / file / playground), cleaning and the split."""

from negopt.data.schema import COLUMNS, conform

__all__ = ["COLUMNS", "conform"]
