"""A procedural image world whose truth is known: captioned 32x32 scenes, four defects, their detectors,
and the users who write (prompt, negative) pairs about it (``data.source: world``).

- :mod:`negopt.world.grammar`: what a prompt can ask for (shape, count, foreground, background)
- :mod:`negopt.world.scenes`: scene sampling, captions, rendering, the truth record of every image
- :mod:`negopt.world.defects`: blur, grain, watermark, washed out: content-dependent rates and rendering
- :mod:`negopt.world.quality`: each image's true quality from its truth record
- :mod:`negopt.world.detectors`: analytic defect detectors, their calibration, AUC, the content checker
- :mod:`negopt.world.oracle`: the truth of a generated image read from its pixels; paired differences
- :mod:`negopt.world.users`: (prompt, negative) pairs in the ``negopt_full`` schema, as real users write them
- :mod:`negopt.world.vocab`: the CLIP tokenizer with one token per word the world uses

The models trained on this world (its VAE, diffusion model, CLIP, aesthetic MLP and classifier) are not
part of the package yet; docs/EXPERIMENTS.md ("A world whose truth is known") says what a prototype of
them measured and what still fails.
"""
