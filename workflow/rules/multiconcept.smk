# Multi-concept generation (paper section 5.3): SD, A&E, the released A&E, A&E-HRV and uniform-weight
# A&E on the benchmark sets, scored with A&E's metrics (full prompt, minimum object, BLIP).
# One sampling job and one scoring job per (set, method, seed, chunk of prompts): adding a seed, a
# method or a set plans only the new jobs (and the tables and grids that read them).
from hrv.multiconcept.benchmark import grid_job_dirs, hrv_input, load_sets, parse_chunk, plan_jobs

MC = config["multiconcept"]
MC_SETS = load_sets(MC["sets"], MC["max_prompts"]) if MC["enabled"] else {}
MC_JOBS = plan_jobs(MC_SETS, MC["methods"], MC["seeds"], MC["prompts_per_job"])
MC_SAMPLING = {**config["sampling"], **MC["sampling"]}
MC_BLIP_TINY = f"{OUT}/multiconcept/blip-tiny"


wildcard_constraints:
    set="type1|type2",


localrules:
    multiconcept_blip_tiny,
    multiconcept_tables,
    multiconcept_grid,


rule multiconcept_blip_tiny:
    output:
        directory(MC_BLIP_TINY),
    params:
        version=VERSION,
    log:
        f"{OUT}/logs/multiconcept_blip_tiny.log",
    conda:
        "../../envs/diffusion.yaml"
    script:
        "../scripts/multiconcept_blip.py"


rule multiconcept_sample:
    input:
        unpack(model_input),
        unpack(lambda wc: hrv_input(wc.method, MC["hrv"], OUT)),
    output:
        images=directory(f"{OUT}/multiconcept/{{set}}/{{method}}/seed{{seed}}/{{chunk}}"),
    params:
        prompts=lambda wc: MC_SETS[wc.set][slice(*parse_chunk(wc.chunk))],
        model=MODEL["source"],
        sampling=MC_SAMPLING,
        settings=MC["settings"],
        concept=MC["concept"],
        subword=MC["subword"],
        batch_size=MC["batch_size"],
        device=config["device"],
        dtype=MC["dtype"],
        version=VERSION,
    wildcard_constraints:
        method="sd|ae|ae_released|ae_hrv|ae_uniform",
        seed=r"\d+",
        chunk=r"p\d+-\d+",
    resources:
        gpu=1,
    log:
        f"{OUT}/logs/multiconcept/{{set}}_{{method}}_seed{{seed}}_{{chunk}}.log",
    conda:
        "../../envs/diffusion.yaml"
    script:
        "../scripts/multiconcept_sample.py"


rule multiconcept_score:
    input:
        images=f"{OUT}/multiconcept/{{set}}/{{method}}/seed{{seed}}/{{chunk}}",
        blip=[MC_BLIP_TINY] if MC["blip"] == "tiny" else [],
    output:
        scores=f"{OUT}/multiconcept/scores/{{set}}/{{method}}/seed{{seed}}/{{chunk}}.csv",
    params:
        clip=MC["clip"],
        blip=lambda wc, input: input.blip[0] if input.blip else MC["blip"],
        device=config["device"],
        version=VERSION,
    wildcard_constraints:
        method="sd|ae|ae_released|ae_hrv|ae_uniform",
        seed=r"\d+",
        chunk=r"p\d+-\d+",
    resources:
        gpu=1,
    log:
        f"{OUT}/logs/multiconcept/score_{{set}}_{{method}}_seed{{seed}}_{{chunk}}.log",
    conda:
        "../../envs/diffusion.yaml"
    script:
        "../scripts/multiconcept_score.py"


rule multiconcept_tables:
    input:
        scores=[f"{OUT}/multiconcept/scores/{j.set}/{j.method}/seed{j.seed}/{j.chunk}.csv" for j in MC_JOBS],
    output:
        scores=f"{OUT}/multiconcept/scores.csv",
        summary=f"{OUT}/multiconcept/summary.csv",
        table2=f"{OUT}/multiconcept/table2.csv",
        markdown=f"{OUT}/multiconcept/table2.md",
        bars=report(
            f"{OUT}/multiconcept/bars.png",
            caption="../report/multiconcept_bars.rst",
            category="Multi-concept generation",
            subcategory="Metrics",
        ),
    params:
        methods=MC["methods"],
        version=VERSION,
    log:
        f"{OUT}/logs/multiconcept_tables.log",
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/multiconcept_tables.py"


rule multiconcept_grid:
    input:
        jobs=lambda wc: grid_job_dirs(MC_JOBS, OUT, wc.set, MC["seeds"][0], MC["grid_prompts"]),
    output:
        png=report(
            f"{OUT}/multiconcept/{{set}}/grid.png",
            caption="../report/multiconcept_grid.rst",
            category="Multi-concept generation",
            subcategory="Image grids",
            labels={"set": "{set}"},
        ),
    params:
        prompts=lambda wc: MC_SETS[wc.set][: MC["grid_prompts"]],
        methods=MC["methods"],
        seed=MC["seeds"][0],
        version=VERSION,
    log:
        f"{OUT}/logs/multiconcept_grid_{{set}}.log",
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/multiconcept_grid.py"
