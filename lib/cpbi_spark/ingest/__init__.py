"""Landing -> bronze: file discovery, readers per format, the idempotent bronze append."""
