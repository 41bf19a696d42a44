"""Lenses: reading a residual state as a next-token distribution.

* :mod:`precompute.lenses.readout` -- the one read-out (final norm recomputed on each state, then
  the unembedding) and the per-(state, position) comparisons with the model's own output;
* :mod:`precompute.lenses.tuned` -- the tuned-lens artifact: translators, safetensors files, and
  the identity check that refuses a lens trained for another model;
* :mod:`precompute.lenses.train` -- the resumable tuned-lens trainer.

Methods (logit lens, tuned lens, lens entropy, guess-then-refine, probes) read through these; no
method imports another method.
"""
