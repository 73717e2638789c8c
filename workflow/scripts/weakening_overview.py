import pandas as pd

from hrv.hrvfile import load_hrv
from hrv.logs import log_to
from hrv.weakening_plots import area_summary, overview

with log_to(snakemake.log[0]):
    tables = {
        name: pd.read_csv(path)
        for name, path in zip(snakemake.params.experiments, snakemake.input.tables, strict=True)
    }
    n_heads = len(load_hrv(snakemake.input.hrv).heads)
    concepts = [str(t["concept"].iloc[0]) for t in tables.values()]
    unique = len(set(concepts)) == len(concepts)  # title by concept unless two experiments share one
    titled = {(c if unique else name): t for c, (name, t) in zip(concepts, tables.items(), strict=True)}
    overview(titled, snakemake.output.png)
    area_summary(tables, snakemake.output.areas, snakemake.output.areas_png, n_heads=n_heads)
