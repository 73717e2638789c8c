from hrv.logs import log_to
from hrv.steps import import_official

with log_to(snakemake.log[0]):
    import_official(
        snakemake.wildcards.which,
        snakemake.output.npz,
        snakemake.params.reference_dir,
        snakemake.input.concepts,
    )
