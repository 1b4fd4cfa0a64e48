"""cinc-flow."""
