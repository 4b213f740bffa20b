"""Layer 1: what every command and page runs on: settings, profiles, the device choice, checkpoint files and the cache."""
