"""Layer 0: tensor helpers every other layer may use (broadcasting, seeded noise)."""
