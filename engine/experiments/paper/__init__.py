"""The ActAdd paper's experiments, one module each; run them with `engine.experiments.replication`."""
