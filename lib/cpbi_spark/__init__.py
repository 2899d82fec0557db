"""cpbi_spark."""
