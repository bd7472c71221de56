"""Training and fine-tuning: options, data and degradations, the losses' networks, the training
loop with checkpoints and events, distributed runs, and self-supervised through-plane fine-tunes."""
