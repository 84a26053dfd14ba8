"""New items without retraining: ``featurizer`` (what an export ships for it) and ``add`` (`genrec add-items`)."""
