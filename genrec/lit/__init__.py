"""Thin Lightning wrappers: losses, logging, optimizers and data loading around the plain models in ``genrec.model``."""

import warnings

# Lightning 2.x calls a torch pytree API that torch >= 2.9 deprecates, once per batch transfer; the
# warning is about Lightning's own code, users cannot act on it, and it buries the progress bar.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
