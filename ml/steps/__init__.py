"""The ``thresher ml …`` workflow steps on a manifest, writing their results to a directory.

Each step reads the manifest's inputs once (:class:`~ml.steps.files.StepInputs`: the decoded
cache of :mod:`ml.cache`, or cached embeddings for a recipe with a head), runs the same ML
functions the GPU worker's jobs run (:mod:`ml.crossval`, :mod:`ml.junk`, :mod:`ml.final`,
:mod:`ml.parallel`) in this process, and writes plain files:

* ``crossval`` (:mod:`ml.steps.cleaning`): ``oof.npz`` (out-of-fold ``probs [N, C]``,
  ``topk_ids``/``topk_probs [N, k]``, ``given_prob [N]``, ``folds``, ``labels``),
  ``decisions.csv`` (one row per sample: top-k rule and cleanlab verdicts, ``status``
  kept/rejected), ``summary.json``, the fold models under ``models/fold-<f>/``;
* ``pullback`` (:mod:`ml.steps.cleaning`): an updated ``decisions.csv`` (``status`` and
  ``pulled_back_round``) and ``summary.json`` with each round's count;
* ``train`` (:mod:`ml.steps.training`): the run directory (checkpoints) and ``history.json``;
* ``predict``: ``predictions.csv`` (top-k classes and probabilities, given label's probability)
  and optionally ``probs.npy``;
* ``junk_train`` / ``junk_score``: the junk model; ``junk_scores.csv`` with p(junk) and the
  review queue.

:mod:`ml.steps.files` holds what they share: the decisions file, defaults, :class:`StepError`.
"""
