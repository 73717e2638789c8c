from hrv.logs import log_to
from hrv.scores.tiny import save_tiny_gsam

with log_to(snakemake.log[0]):
    save_tiny_gsam(snakemake.output.models, seed=snakemake.params.seed)
