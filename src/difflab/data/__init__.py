"""Layer 1: datasets (images, audio) with embedded defaults, and the errors that name their fix."""
