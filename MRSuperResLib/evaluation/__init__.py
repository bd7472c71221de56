"""Evaluation: the fidelity protocol (degrade, super-resolve, score against baselines), thick-slice
evaluation, one-volume comparisons, metrics, figures, map scores and the speed benchmark."""
