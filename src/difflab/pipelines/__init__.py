"""Layer 6: the trained pipelines: recipes and their budgets, the latent autoencoder, the simplified Stable Diffusion, audio, the noisy classifier and the pretrained foundations models."""
