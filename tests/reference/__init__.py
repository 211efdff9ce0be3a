"""Straightforward numpy references, one module per layer family: slow, obvious loops that the
kernels are checked against. Never call a protonet kernel from here."""
