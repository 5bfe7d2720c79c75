"""A test stand-in for torchvision: only ``transforms`` (see ../README.md)."""
