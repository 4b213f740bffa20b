"""Layer 5: training: the loop, recipes and profiles, checkpoints, the cache and the device choice."""
