"""The comparison: images per method on the same prompts and seeds (:mod:`generate`, :mod:`best_of_n`),
their metrics (:mod:`evaluate`, :mod:`scores`), relative gains with paired bootstrap intervals
(:mod:`gains`, :mod:`intervals`), the HTML report (:mod:`report`) and the reward-weight frontier of a
sweep (:mod:`frontier`)."""
