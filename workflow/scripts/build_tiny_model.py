from hrv.logs import log_to
from hrv.models import TinyConfig, save_tiny_model

with log_to(snakemake.log[0]):
    save_tiny_model(snakemake.output.model, TinyConfig(seed=snakemake.params.seed))
