"""Will it fit? The memory model (memory_model), its measured constants (calibration), settings
that fit (advice), GPU sizes by name (targets) and what a finished run teaches (learn). Torch-free."""
