"""Layer 5: the training engine: the loop (EMA, warm-up, clipping, resumable checkpoints) and Ctrl-C handling."""
