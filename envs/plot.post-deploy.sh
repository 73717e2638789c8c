#!/usr/bin/env bash
# Snakemake runs this inside the new env: install hrv from this checkout (editable, no deps: the env
# file pins them). A relative `pip: [-e ../]` in the env file would not work, since Snakemake copies
# the env file to .snakemake/conda/ before creating the env.
set -euo pipefail
python -m pip install --no-deps -e "$(cd "$(dirname "$0")/.." && pwd)"
