"""Layer 4: exact-density toy worlds (Gaussian mixtures) and the sampler sandbox."""
