from hrv.logs import log_to
from hrv.scores.bgdino_tables import write_tables

out, models = snakemake.output, snakemake.params.models
with log_to(snakemake.log[0]):
    write_tables(
        snakemake.input.scores,
        snakemake.input.clip,
        out.summary,
        out.html,
        out.scatter,
        out.points,
        title=f"BG-DINO ({models['detector']}, {models['segmenter']}, {models['embedder']})",
    )
