"""Analysis: run folders → one tidy DataFrame (results.py) → figures (plot.py) and the
report beside the paper's Table 6 (report.py). Reads run files only, writes nothing into runs.
"""
