"""Layer 1: the networks (shared layers, UNet, MLP, the metric classifier). They see only ``x``, ``t`` and ``cond``."""
