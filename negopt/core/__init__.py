"""What every stage shares: the params schema, atomic I/O, errors, stage start-up, fingerprints, sharding
over processes, distinct rows, mean and standard error, model cards. Nothing here imports torch at module
level, so the light stages (scrape, clean, compare) start without it."""
