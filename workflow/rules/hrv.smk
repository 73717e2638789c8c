# HRV accumulation (spec section 1): build the model, vote in shards, merge and normalise, plot.

# Cheap rules run on the submitting node under a cluster executor (profiles/slurm).
localrules:
    build_tiny_model,
    hrv_merge,
    hrv_heatmap,



rule build_tiny_model:
    output:
        model=directory("resources/models/tiny"),
    params:
        seed=MODEL["tiny_seed"],
        version=VERSION,
    log:
        "results/logs/build_tiny_model.log",
    conda:
        "../../envs/diffusion.yaml"
    script:
        "../scripts/build_tiny_model.py"


rule hrv_shard:
    input:
        unpack(model_input),
        concepts=config["hrv"]["concepts"],
    output:
        counts=f"{OUT}/hrv/shards/shard_{{shard}}.npz",
    params:
        prompts=lambda wc: SHARDS[int(wc.shard)],
        model=MODEL["source"],
        seed=config["seed"],
        sampling=config["sampling"],
        hrv={k: config["hrv"][k] for k in ("batch_size", "keep_sot", "batch_invariant")},
        device=config["device"],
        dtype=config["dtype"] if config["dtype"] != "auto" else MODEL["dtype"],
        version=VERSION,
    wildcard_constraints:
        shard=r"\d{3}",
    resources:
        gpu=1,
    log:
        f"{OUT}/logs/hrv_shard_{{shard}}.log",
    conda:
        "../../envs/diffusion.yaml"
    script:
        "../scripts/hrv_shard.py"


rule hrv_merge:
    input:
        shards=expand(f"{OUT}/hrv/shards/shard_{{shard}}.npz", shard=SHARD_IDS),
        concepts=config["hrv"]["concepts"],
        prompts=config["hrv"]["prompts"],
    output:
        npz=f"{OUT}/hrv/hrv.npz",
        csv=f"{OUT}/hrv/hrv.csv",
        ranking=f"{OUT}/hrv/head_ranking.csv",
    params:
        max_prompts=config["hrv"]["max_prompts"],
        version=VERSION,
    log:
        f"{OUT}/logs/hrv_merge.log",
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/hrv_merge.py"


rule hrv_heatmap:
    input:
        npz=rules.hrv_merge.output.npz,
    output:
        png=report(
            f"{OUT}/hrv/heatmap.png",
            caption="../report/heatmap.rst",
            category="HRV",
        ),
    params:
        plot=config["plots"]["heatmap"],
        version=VERSION,
    log:
        f"{OUT}/logs/hrv_heatmap.log",
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/hrv_heatmap.py"
