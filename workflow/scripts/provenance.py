from pathlib import Path

from hrv.logs import log_to
from hrv.provenance import collect, write_provenance

p = snakemake.params
with log_to(snakemake.log[0]):
    record = collect(
        dict(p.config),
        model_source=p.model,
        shard_files=snakemake.input.shards,
        code_folder=Path(snakemake.scriptdir).parents[1],
    )
    write_provenance(snakemake.output.json, record)
