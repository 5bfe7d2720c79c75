"""A test stand-in for captum: only ``attr.IntegratedGradients`` (see ../README.md)."""
