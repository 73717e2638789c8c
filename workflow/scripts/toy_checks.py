from pathlib import Path

from hrv.logs import log_to
from hrv.toy.checks import ToyCheckSettings, run_checks

with log_to(snakemake.log[0]):
    settings = dict(snakemake.params.toy)
    settings["ks"] = tuple(settings["ks"])
    run_checks(
        snakemake.input.model,
        snakemake.input.concepts,
        Path(snakemake.output.json).parent,
        ToyCheckSettings(**settings, threads=snakemake.threads),
    )
