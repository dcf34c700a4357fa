"""Shipped recipes: one OmegaConf YAML per method (installed as the `avssl.recipes` package)."""
