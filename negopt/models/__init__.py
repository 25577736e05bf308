"""Model profiles: the tiny builders (``tiny``), the one loader (``loader``), the CLI table (``check``).

Import from the submodules (``from negopt.models.loader import load_sd_pipeline``); this package file stays
empty of heavy imports so ``import negopt.models`` is cheap.
"""
