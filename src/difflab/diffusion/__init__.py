"""Layer 2: the discrete diffusion process: schedules, the forward process, parameterisations, losses and samplers."""
