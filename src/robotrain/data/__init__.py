"""Everything that opens a parquet or an mp4 lives in this package (house rule)."""
