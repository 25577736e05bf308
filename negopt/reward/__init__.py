"""The image reward RL trains on and best_of_n selects with: the registry of reward terms (:mod:`terms`),
their standardisation (:mod:`term_stats`), the weighted reward and scoring (prompt, negative, seed)
triples (:mod:`weighted`)."""
