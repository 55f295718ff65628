"""Animating pictures with trained models, apart from training: loading runs
and exports, sampling spectral volumes, motion textures, interactive
dynamics, rendering."""
