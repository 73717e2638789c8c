from hrv.logs import log_to
from hrv.multiconcept.tables import image_grid

p, wc = snakemake.params, snakemake.wildcards
with log_to(snakemake.log[0]):
    dirs = {m: [d for d in snakemake.input.jobs if f"/{m}/seed" in d] for m in p.methods}
    image_grid(dirs, p.prompts, p.seed, snakemake.output.png, title=f"{wc.set}, seed {p.seed}")
