"""genrec: generative recommendation with semantic IDs.

Pipeline (each stage writes a folder with a manifest.json into the run folder):
prepare -> dataset/, embed -> features/, tokenize -> sid/, train -> checkpoints/,
evaluate -> metrics.json, export -> export/<name>/, serve -> HTTP.
"""

__version__ = "0.1.0"
