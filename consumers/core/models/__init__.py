"""Online models of the pure core, one concept per module, in river's style."""
