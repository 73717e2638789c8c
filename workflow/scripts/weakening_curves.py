import pandas as pd

from hrv.logs import log_to
from hrv.weakening_plots import curves, read_reference_curve

with log_to(snakemake.log[0]):
    table = pd.read_csv(snakemake.input.table)
    ref = snakemake.input.get("reference")
    reference = read_reference_curve(ref) if ref else None
    title = f"{table['concept'].iloc[0]} ({snakemake.wildcards.experiment})"
    curves(table, snakemake.output.png, title, reference=reference)
