# Makes the shipped configs importable as resexp.configs (configs/ at the top of the repository links here).
