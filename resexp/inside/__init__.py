"""Inside a network: layer responses (He et al. Fig. 7), gradient flow, the identity test,
and the loggers that stream a run's numbers elsewhere (TensorBoard, Weights & Biases).

diagnostics.py measures; monitor.py decides when and writes the run's diagnostics CSVs
through the run folder; loggers.py is the one interface of tensorboard.py and wandb_log.py.
"""
