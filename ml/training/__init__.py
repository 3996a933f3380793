"""The parts of training that :func:`ml.train.train_model` (a whole network on images) and
:func:`ml.head_training.train_head` (a head on cached embeddings) are built from.

* :mod:`ml.training.interface`: what a run takes and gives back besides the data: validation
  sets, progress reports, the stop signal, the result and the error;
* :mod:`ml.training.setup`: the network with its logit adjustment, the optimiser and the
  learning-rate schedule;
* :mod:`ml.training.batches`: which rows each step sees (the epoch order, the DataLoader) and the
  training set's fingerprint;
* :mod:`ml.training.objective`: the loss of a batch, distillation teachers included;
* :mod:`ml.training.resume`: where a run stands, saved as a checkpoint and resumed from one.
"""
