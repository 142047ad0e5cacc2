"""Access rules (SPEC §16): loading, matching and templates."""
