"""Batched, seeded steering experiments: sweeps, metrics, plots and the ActAdd paper's replication.

    spec = SweepSpec(vector, coeffs=[-8, -4, 0, 4, 8], layers=[0, 1, 2, 3], targets=["wedding", "bride"])
    result = run_sweep(loaded, spec, progress=..., cancel=threading.Event())
    result.to_csv("sweep.csv"); plot_sweep(result, "sweep.png")

Plots draw on matplotlib's Agg canvas and never import Qt.
"""

from engine.experiments.sweep import (
    METRICS,
    OWN_LAYERS,
    SweepCell,
    SweepResult,
    SweepSpec,
    run_sweep,
    vector_for_layer,
)


def plot_sweep(result: SweepResult, path) -> None:
    """Line plot (one layer) or layer × coefficient heatmap of a sweep, as a PNG (see `plots`)."""
    from engine.experiments.plots import plot_sweep as _plot_sweep

    _plot_sweep(result, path)


__all__ = [
    "METRICS",
    "OWN_LAYERS",
    "SweepCell",
    "SweepResult",
    "SweepSpec",
    "plot_sweep",
    "run_sweep",
    "vector_for_layer",
]
