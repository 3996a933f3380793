"""Label-cleaning rules: pure functions over numpy arrays (torch-free; the server uses them too).

Every rule takes the given labels ``[N]`` (int class ids) and model outputs for the same samples,
and returns per-sample masks or scores. Public functions validate their inputs
(:mod:`~ml.core.cleaning.arrays`) and call a private twin that computes. Conventions:

* ``kept`` masks: ``True`` = the sample keeps its label; ``rejected = ~kept``.
* ``label_rank``: how many other classes are at least as probable as the given label; 0 = the
  label is the top class; higher = more likely mislabeled.
* ``label_quality``: cleanlab's score in ``[0, 1]``; lower = more likely mislabeled.
* ``knn_agreement``: share of a sample's nearest neighbours carrying its label, in ``[0, 1]``;
  lower = more likely mislabeled.

Where each rule lives:

* :mod:`~ml.core.cleaning.topk`: the top-k rule (``topk_keep``, ``topk_keep_from_ids`` for
  uploaded top-k ids), ``label_rank_among_classes``, the pull-back (``pullback``: after training
  on the kept set, move back every reject whose label is now in its top-k) and the calibrated
  pull-back (``calibrated_pullback``: after people checked a random sample of the rejects, move
  back the unchecked ones in the score band where rejects are more often right than wrong);
* :mod:`~ml.core.cleaning.confident`: cleanlab's ``find_label_issues`` and label-quality scores
  on the same probabilities;
* :mod:`~ml.core.cleaning.knn`: the labels of each sample's k nearest neighbours in embedding
  space (cosine), a detector that needs no trained model;
* :mod:`~ml.core.cleaning.quality`: precision / recall / F1 of a rejected set against known
  noise;
* :mod:`~ml.core.cleaning.targets`: what the final training learns from kept and rejected
  samples (rejected ones never through their given label).
"""
