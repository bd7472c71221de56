"""The generator network, its weights (import, export, checkpoints), model cards, the registry of
installed and shipped models, and the known public datasets models are trained on."""
