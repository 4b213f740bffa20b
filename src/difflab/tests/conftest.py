"""Core tests run on small tensors, where one thread beats two (and avoids contention)."""

import torch

torch.set_num_threads(1)
