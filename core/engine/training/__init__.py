"""How the train job runs the Trainer (core/engine/trainer.py, built by its `build_trainer`): in one
process with the automatic out-of-memory retry (oom), or as one rank of several (ranks); and the
experts' LoRA on a grouped path, the fast path's part for mixtures of experts (expert_lora)."""
