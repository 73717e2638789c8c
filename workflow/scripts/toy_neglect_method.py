from hrv.logs import log_to
from hrv.toy.neglect import run_neglect_method, settings_from_config

with log_to(snakemake.log[0]):
    run_neglect_method(
        snakemake.input.model,
        snakemake.input.hrv,
        snakemake.wildcards.method,
        snakemake.output.npz,
        settings_from_config(snakemake.params.neglect, [snakemake.wildcards.method], snakemake.threads),
    )
