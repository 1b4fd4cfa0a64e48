"""Flow layers. ``CONVS``: the invertible-convolution choices of a flow step (``conv=...``)."""

CONVS = ("cinc", "emerging", "glow")
