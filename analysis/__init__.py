"""What we learned: the Parquet contract, loading, tables and plots (pandas/pyarrow only)."""
