from hrv.logs import log_to
from hrv.polysemy import rate_files

out = snakemake.output
with log_to(snakemake.log[0]):
    rate_files(snakemake.input.scores, out.rates, out.table, out.bars, snakemake.params.clip_name)
