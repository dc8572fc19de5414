"""The DeepSpeed learner.

* :mod:`rlengine.learner.rank` - ``LearnerRank``, one rank's computation as a plain class
  (drive it directly in tests, benchmarks and GPU checks);
* :mod:`rlengine.learner.group` - ``LearnerGroup``, the ranks as Ray actors, and the planning;
* :mod:`rlengine.learner.batching` - mini-batches, micro-batches and their tensors (pure);
* :mod:`rlengine.learner.logprobs` - response-token logprobs and entropy without full-vocabulary
  copies;
* :mod:`rlengine.learner.spec` - ``LearnerSpec``, what a rank is built from.

Nothing is imported here, so ``rlengine.learner.rank`` loads without Ray.
"""
