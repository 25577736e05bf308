"""Images and what is measured on them: rendering (prompt, negative, seed) through a diffusers pipeline
(:mod:`render`), the Inception / aesthetic / CLIP scorers (:mod:`scorers`) and the human-preference
scorers (:mod:`preference`). Images cross every boundary as uint8 ``[N, 3, H, W]`` CPU tensors."""
