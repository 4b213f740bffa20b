"""difflab: the diffusion-model package behind the Diffusion-Model-Learning site."""

__version__ = "0.1.0"
