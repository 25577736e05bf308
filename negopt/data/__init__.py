"""Data: the negopt_full schema, the sources (sample / hf / file / playground), cleaning and the grouped split,
and the prompt files generate and ``negopt suggest`` read."""
