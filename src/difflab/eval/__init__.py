"""Layer 7: measuring: the classifier-feature metrics and the benchmarks."""
