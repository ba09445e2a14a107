"""The synthetic face domain the embedded default model is trained and measured on; not part of the PTI core.

``faces`` renders procedural, labelled faces from a latent; ``attributes`` is the small CNN that reads those labels
back from an image. Only ``tools/`` (training), ``benchmarks/`` and ``tests/`` use them: the core (``pti``) and
the nodes never import this package. Import the modules explicitly, e.g. ``from pti.synthetic import faces``.
"""
