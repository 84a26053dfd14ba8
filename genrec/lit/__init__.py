"""Thin Lightning wrappers: losses, logging, optimizers and data loading around the plain models in ``genrec.model``."""
