"""The maintainers' model shipping: validate a finished run and ship its model with a card, rank
a run's checkpoints, check texture, export a checkpoint's generator, measure the losses' pull,
and print the cards' tables. Run through scripts/maintainers/; not needed to use a model."""
