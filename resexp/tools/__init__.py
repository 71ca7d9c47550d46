"""Tools beside the experiment: `bench` (training speed, with the conventional baseline) and
`eval` (a finished run's checkpoint on its test set)."""
