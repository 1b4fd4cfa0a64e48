"""Flow layers, one concept per file; ``step.CONVS`` names the invertible-convolution choices (``conv=...``)."""
