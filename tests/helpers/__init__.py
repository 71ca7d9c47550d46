"""Shared test helpers: run factories, snapshots, interrupt helpers, file formats, markers."""
