"""Layer 3: the score-based view: SDEs, their samplers and ODE solvers, score matching and likelihood."""
