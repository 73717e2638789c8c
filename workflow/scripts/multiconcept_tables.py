from pathlib import Path

from hrv.logs import log_to
from hrv.multiconcept.tables import bar_chart, write_tables

p = snakemake.params
with log_to(snakemake.log[0]):
    summary = write_tables(snakemake.input.scores, p.methods, Path(snakemake.output.summary).parent)
    bar_chart(summary, p.methods, snakemake.output.bars)
