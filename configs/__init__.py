# Makes the shipped configs importable as resexp.configs (see pyproject.toml).
