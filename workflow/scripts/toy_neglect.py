from pathlib import Path

from hrv.logs import log_to
from hrv.toy.neglect import NeglectSettings, run_neglect

with log_to(snakemake.log[0]):
    p = dict(snakemake.params.neglect)
    run_neglect(
        snakemake.input.model,
        snakemake.input.hrv,
        Path(snakemake.output.json).parent,
        NeglectSettings(
            methods=tuple(p["methods"]),
            scenes=p["scenes"],
            seeds=tuple(p["seeds"]),
            steps=p["steps"],
            guidance_scale=snakemake.params.guidance_scale,
            concept=p["concept"],
            batch_size=p["batch_size"],
            threads=snakemake.threads,
        ),
    )
