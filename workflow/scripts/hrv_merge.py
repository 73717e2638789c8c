from hrv.logs import log_to
from hrv.steps import merge

out = snakemake.output
with log_to(snakemake.log[0]):
    merge(snakemake.input.shards, out.npz, out.csv, out.ranking, concepts_csv=snakemake.input.concepts)
