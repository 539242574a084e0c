"""How to run many: Ray Train trials, Ray Tune + Optuna search, Parquet export."""
