"""The `spectral-jax` commands, one module each: its options
(``add_arguments``) and its work (``run(args)``); `spectral_jax.cli` builds
the parser from them and calls the command's ``run``."""
