"""Work pool base job templates kept as commented YAML; `prefect work-pool create` takes them as JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

K8S_WORK_POOL = Path(__file__).with_name("k8s-work-pool.yaml")


def load_base_job_template(path: str | Path = K8S_WORK_POOL) -> dict[str, Any]:
    """The template as the Prefect API expects it: `job_configuration` and `variables` at the top."""
    template = yaml.safe_load(Path(path).read_text())
    missing = {"job_configuration", "variables"} - set(template or {})
    if missing:
        raise ValueError(f"{path}: not a base job template, it lacks {', '.join(sorted(missing))}")
    return template


def main(argv: list[str]) -> None:
    """`python -m deployments.work_pools [FILE]`: print FILE (default: the Kubernetes template) as JSON."""
    json.dump(load_base_job_template(argv[0] if argv else K8S_WORK_POOL), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1:])
