"""bronze -> silver: typed, validated, deduplicated tables and SCD dimensions."""
