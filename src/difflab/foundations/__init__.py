"""Layer 1, stage 1 of the path: Gaussians, Markov chains, SDE basics, optimisation, the VAE and the GAN."""
