from hrv.logs import log_to
from hrv.toy.editing import write_toy_edits

p, out = snakemake.params, snakemake.output
with log_to(snakemake.log[0]):
    write_toy_edits(
        snakemake.input.model,
        snakemake.input.hrv,
        out.csv,
        out.table,
        out.html,
        methods=p.toy["methods"],
        captions=p.toy["captions"],
        seeds=p.toy["seeds"],
        seed=p.toy["seed"],
        steps=p.steps,
        guidance_scale=p.guidance_scale,
    )
