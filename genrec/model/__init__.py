"""Neural models as plain ``nn.Module``s: no I/O, no training loops (those live in ``genrec.lit``)."""
