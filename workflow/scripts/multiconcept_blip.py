from hrv.logs import log_to
from hrv.multiconcept.metrics import save_tiny_blip

with log_to(snakemake.log[0]):
    save_tiny_blip(snakemake.output[0])
