"""Core tests run on small tensors, where one thread beats two (and avoids contention)."""

import torch

from difflab.core.memory import keep_freed_memory

torch.set_num_threads(1)
keep_freed_memory()  # the same results, faster CPU loops
