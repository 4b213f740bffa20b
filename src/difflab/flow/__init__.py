"""Flow matching, rectified flow and consistency distillation (Frontier chapter)."""
