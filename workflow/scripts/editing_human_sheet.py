from hrv.editing.human import write_edit_sheet
from hrv.editing.scores import read_manifests
from hrv.logs import log_to

out, p = snakemake.output, snakemake.params
with log_to(snakemake.log[0]):
    write_edit_sheet(
        read_manifests([snakemake.input.manifest]),
        out.sheet,
        out.key,
        out.page,
        out.images,
        seed=p.seed,
        sets=p.sets,
    )
