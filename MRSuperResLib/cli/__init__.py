"""The command line `mrsuperres`: argument parsing, commands, and enhance over one volume or a
cohort."""
