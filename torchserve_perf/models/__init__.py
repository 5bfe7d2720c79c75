"""Models defined in this repo with seeded weights, so that nothing is downloaded."""
