from hrv.logs import log_to
from hrv.polysemy import read_cases, read_manifests, write_human_sheet

out = snakemake.output
with log_to(snakemake.log[0]):
    write_human_sheet(
        read_manifests(snakemake.input.manifests),
        read_cases(snakemake.input.cases),
        out.sheet,
        out.key,
        out.page,
        out.images,
        seed=snakemake.params.seed,
    )
