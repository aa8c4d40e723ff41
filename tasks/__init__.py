"""Pipeline stages: small typed functions and thin Prefect task wrappers.

Each stage is one module or package (extract, clean, validate, train, registry, forecast, publish, score,
report, prune), and no stage imports another: what they share lives in plumbing modules (config, sections,
schemas, db, retry, files, parsing, panel, summary, errors, cache); `export.py` writes a registered model
to ONNX for the CLI. A `@task` named `x` wraps the plain
function `run_x`, which tests and the CLI call without Prefect.
"""
