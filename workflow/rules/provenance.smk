# Reproducibility record of the run (results/<run>/provenance.json), shown in `snakemake --report`.


localrules:
    provenance,


rule provenance:
    input:
        unpack(model_input),
        shards=expand(f"{OUT}/hrv/shards/shard_{{shard}}.npz", shard=SHARD_IDS),
    output:
        json=report(
            f"{OUT}/provenance.json",
            caption="../report/provenance.rst",
            category="Provenance",
        ),
    params:
        # the whole resolved config on purpose: any change of it re-writes the record
        config=config,
        model=MODEL["source"],
        version=VERSION,
    log:
        f"{OUT}/logs/provenance.log",
    conda:
        "../../envs/diffusion.yaml"
    script:
        "../scripts/provenance.py"
