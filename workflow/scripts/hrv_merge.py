from hrv.logs import log_to
from hrv.prompts import read_prompts
from hrv.steps import merge

out = snakemake.output
with log_to(snakemake.log[0]):
    # the prompt list the shards were cut from: each shard's prompt hash is checked against it
    prompts = read_prompts(snakemake.input.prompts, snakemake.params.max_prompts)
    merge(snakemake.input.shards, out.npz, out.csv, out.ranking, snakemake.input.concepts, prompts)
