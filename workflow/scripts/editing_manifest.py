from hrv.editing.stage import combine
from hrv.logs import log_to

with log_to(snakemake.log[0]):
    combine(snakemake.input.jobs, snakemake.output.manifest)
