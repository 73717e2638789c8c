from hrv.hrvfile import load_hrv
from hrv.logs import log_to
from hrv.plots import heatmap

with log_to(snakemake.log[0]):
    heatmap(load_hrv(snakemake.input.npz), snakemake.output.png, **snakemake.params.plot)
