"""Data: datasets on disk → uint8 tensors in memory → batches made on the device.

Owns where the files are found or staged (`dataset.root`, `dataset.source`), the formats read,
and the batch stream a run sees (a function of seed and epoch only). Dataset YAMLs name their
class here, e.g. `_target_: resexp.data.SyntheticImages`.
"""

from resexp.data.load import (Data, SyntheticImages, Split, data_root, eval_batches, iters_per_epoch, load_data,
                              open_dataset, random_data, train_batches)

__all__ = ["Data", "Split", "SyntheticImages", "data_root", "eval_batches", "iters_per_epoch", "load_data",
           "open_dataset", "random_data", "train_batches"]
