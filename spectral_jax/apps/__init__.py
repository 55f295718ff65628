"""The `spectral-jax` commands, one module each; `spectral_jax.cli` parses
the command line and calls the command's ``run(args)``."""
