"""Hand-made probabilities shared by the cleaning-rule tests."""

from __future__ import annotations

import numpy as np

# Four samples, three classes; given labels 0, 1, 2, 0.
LABELS = np.array([0, 1, 2, 0])
PROBS = np.array(
    [
        [0.7, 0.2, 0.1],  # label 0 is top-1
        [0.5, 0.3, 0.2],  # label 1 is second
        [0.6, 0.3, 0.1],  # label 2 is third
        [0.1, 0.1, 0.8],  # label 0 ties for second with class 1: ranked third
    ]
)
