"""Layer 6: measuring: the classifier-feature metrics and the benchmarks."""
