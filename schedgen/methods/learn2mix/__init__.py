"""learn2mix as a schedule: class mixes that follow the loss, seeded and replayable.

Class proportions α start at the training set's class proportions. After each
epoch, with class-wise mean losses L (DESIGN.md section 2, paper Alg. 2)::

    α ← α + γ (L / ΣL − α),      γ ∈ (0, 1] the mixing rate

Every batch of an epoch holds exactly k samples: ``largest_remainder_counts(α, k)``
of class j, drawn from a per-class permutation through a cyclic pointer (paper
Eqs. 12-13), so a small class repeats instead of running out. The rule, whole:

* **Permutation.** In epoch e, class j is visited in the order
  ``members_j[rng(seed, "learn2mix", e, j).permutation(n_j)]`` (:mod:`schedgen.rng`),
  ``members_j`` the sample indices of class j in ascending order.
* **Pointer and wrap.** Each class's pointer starts at 0 every epoch; a batch takes
  the next ``c_j`` entries, wrapping to the start of the same epoch's permutation:
  draw t of class j in epoch e is ``perm_j[t mod n_j]``.
* **In-batch order.** By class id, and within a class by draw order; a class with
  ``c_j = 0`` contributes nothing.
* **Batches per epoch.** ``ceil(N / k)`` unless given.

The pieces: α's arithmetic (:func:`initial_alpha`, :func:`largest_remainder_counts`,
:func:`update_alpha`, :func:`class_mean_losses`), the drawing rule
(:class:`Learn2MixPlanner`), groups without labels (:func:`kmeans_groups`,
:func:`parse_groups`), the offline precompute whose losses come from a
softmax-regression proxy trained along the schedule (:func:`learn2mix_schedule`,
:func:`schedule_memory`, :func:`default_lr`), and the method the build runs
(:class:`Learn2MixMethod`). Online trainers use
:class:`schedgen.torch.Learn2MixBatchSampler`, which plays the same planner.

Pure NumPy, SciPy imported only by k-means: a cache hit imports this package and
nothing heavy; nothing here imports torch.
"""

from __future__ import annotations

from ._alpha import ALPHA_TOLERANCE, class_mean_losses, initial_alpha, largest_remainder_counts, update_alpha
from ._driver import Learn2MixResult, learn2mix_schedule, schedule_memory
from ._kmeans import kmeans_groups, parse_groups
from ._method import Learn2MixMethod
from ._planner import Learn2MixPlanner
from ._proxy import SoftmaxProxy, default_lr

__all__ = [
    "ALPHA_TOLERANCE",
    "Learn2MixMethod",
    "Learn2MixPlanner",
    "Learn2MixResult",
    "SoftmaxProxy",
    "class_mean_losses",
    "default_lr",
    "initial_alpha",
    "kmeans_groups",
    "largest_remainder_counts",
    "learn2mix_schedule",
    "parse_groups",
    "schedule_memory",
    "update_alpha",
]
