"""Model compression: structured pruning and the distillation that trains a pruned voice back."""
