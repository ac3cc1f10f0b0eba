"""The histogram (counting) task of the paper's Section 2 (attnsim.histogram_sweep has every field).

    attnsim run --config configs/histogram.py          # the authors' protocol: 2 variants x 10 seeds, 200 epochs
    attnsim run --config configs/histogram.py:small    # a few minutes on a 2-core CPU
    attnsim run --config configs/histogram.py:data     # beyond the paper: every variant against training-set size

No argument: the authors' protocol (SPOC-group/positional-and-semantic-attention, run_histogram.py): the
positional and semantic variants on the whole training split (70% of 50,000 draws, duplicates removed), 10
seeds, Adam for 200 epochs, then the retraining of the free model (SGD, 100 epochs) that measures the drift.
"small": the three variants at four training-set sizes up to 16,000, 2 seeds, 10 epochs (at least 1,500
steps), 2 retraining epochs. "data": the free model beside the restricted ones from 250 sequences to the whole
split, 3 seeds, 20 epochs (at least 4,000 steps), no retraining.
"""

import ml_collections


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.task = "histogram"
    c.name = "histogram"
    if arg == "small":
        c.name = "histogram-small"
        c.variants = ("positional", "semantic", "free")
        c.n_trains = (300, 1000, 4000, 16000)
        c.seeds = 2
        c.epochs = 10
        c.min_steps = 1500
        c.retrain_epochs = 2
    elif arg == "data":
        c.name = "histogram-data"
        c.variants = ("positional", "semantic", "free")
        c.n_trains = (250, 500, 1000, 2000, 4000, 8000, 16000, 35000)
        c.seeds = 3
        c.epochs = 20
        c.min_steps = 4000
        c.retrain_epochs = 0
    elif arg is not None:
        raise ValueError(f"unknown argument {arg!r} (use 'small', 'data' or nothing)")
    return c
