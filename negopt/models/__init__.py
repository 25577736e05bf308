"""Model profiles: where each component is found offline (:mod:`find`, :mod:`hub`) or fetched from
(:mod:`fetch`), the one loader every stage uses (:mod:`loader`), the tiny random zoo (:mod:`tiny`, :mod:`t5`)
and the full-size paper replica (:mod:`replica`, :mod:`hub_cache`)."""
