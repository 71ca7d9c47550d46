"""Settings: the YAML config groups + command-line overrides → one validated config.

Owns composing (Hydra), the typed schema (every key's type, default, range and whether it
changes results) and the one-line errors for a setting that cannot be used.
"""
