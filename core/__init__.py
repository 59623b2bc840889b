"""LoRA Studio's core: configs, journals, run folders, model metadata, and (in workers) training.

Importing this package or its torch-free modules (config, events, runs, modelinfo, targets, cli)
never imports torch; the heavy modules (modelsetup, data, trainer, worker) are imported only by
worker processes.
"""
