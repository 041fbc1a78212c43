"""The names of the ways a vector is made and applied: one home, light to import (no torch), so the CLI's
argument parser can offer them without loading the engine."""

from __future__ import annotations

METHODS = ("actadd", "mean-diff", "pca", "combined", "imported")  # how a vector was made
PAIR_METHODS = ("mean-diff", "pca")  # directions reduced from many prompt pairs (capture_from_pairs)
# where a vector is added (engine.steering): ActAdd's front positions, every position, generated positions
# only, or the direction projected out
MODES = ("front", "all", "generated", "ablate")
