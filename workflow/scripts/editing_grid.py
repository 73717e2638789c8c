from hrv.editing.stage import set_grid
from hrv.logs import log_to

with log_to(snakemake.log[0]):
    set_grid(
        snakemake.input.manifest, snakemake.wildcards.set, snakemake.output.png, seed=snakemake.params.seed
    )
