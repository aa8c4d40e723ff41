"""Pipeline stages: small typed functions and thin Prefect task wrappers, one module per stage."""
