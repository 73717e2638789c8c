from hrv.logs import log_to
from hrv.scoring import read_manifests
from hrv.weakening_plots import image_grid

p = snakemake.params
with log_to(snakemake.log[0]):
    manifest = read_manifests(snakemake.input.jobs)
    image_grid(manifest, snakemake.output.png, p.prompts, p.seed, title=snakemake.wildcards.experiment)
