from pathlib import Path

from hrv.logs import log_to
from hrv.toy.neglect import run_neglect_table, settings_from_config

with log_to(snakemake.log[0]):
    methods = list(snakemake.params.methods)
    run_neglect_table(
        dict(zip(methods, snakemake.input.npz, strict=True)),
        Path(snakemake.output.json).parent,
        settings_from_config(snakemake.params.neglect, methods),
    )
