# SD-HRV for polysemous words (paper section 5.1) and its ablation, strengthening vs adjusting
# (appendix D.3): images per case and method, CLIP proxy rates, and a sheet for human judging.
from pathlib import Path

from hrv.polysemy import hrv_source, read_cases
from hrv.workflow import OFFICIAL_CONCEPTS, check_case_concepts, stage_concepts, switch_off_hint

POLY = config["polysemy"]
POLY_CASES = []
if POLY["enabled"]:
    POLY_CASES = [c.case for c in read_cases(Path(workflow.basedir) / POLY["cases"], POLY["which"])]
    check_case_concepts(
        read_cases(Path(workflow.basedir) / POLY["cases"], POLY["which"]),
        stage_concepts(POLY["hrv"], config["hrv"]["concepts"]),
        switch_off_hint("polysemy", "which"),
    )
POLY_SAMPLING = POLY["sampling"]  # the full settings (hrv.config.resolve_stage_sampling)
# the HRVs to steer with: the run's own (null), imported official ones (sd14, sdxl), or a file
POLY_HRV = hrv_source(POLY["hrv"] if POLY["enabled"] else None, rules.hrv_merge.output.npz, f"{OUT}/hrv/official")

localrules:
    polysemy_import_hrv,
    polysemy_rates,
    polysemy_human_sheet,


rule polysemy_import_hrv:
    input:
        concepts=OFFICIAL_CONCEPTS,  # the released HRVs' rows, whatever concepts this run accumulates
    output:
        npz=f"{OUT}/hrv/official/hrv_official_{{which}}.npz",
    params:
        reference_dir="resources/reference",
        version=VERSION,
    wildcard_constraints:
        which="sd14|sdxl",
    log:
        f"{OUT}/logs/polysemy_import_hrv_{{which}}.log",
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/polysemy_import_hrv.py"


rule polysemy_images:
    input:
        unpack(model_input),
        hrv=POLY_HRV,
        cases=POLY["cases"],
    output:
        images=directory(f"{OUT}/polysemy/cases/{{case}}/images"),
        manifest=f"{OUT}/polysemy/cases/{{case}}/images.csv",
        grid=report(
            f"{OUT}/polysemy/cases/{{case}}/grid.png",
            caption="../report/polysemy_grid.rst",
            category="Polysemous words (SD-HRV)",
            subcategory="images",
            labels={"case": "{case}"},
        ),
    params:
        model=MODEL["source"],
        seeds=POLY["seeds"],
        methods=POLY["methods"],
        batch_size=POLY["batch_size"],
        sampling=POLY_SAMPLING,
        device=config["device"],
        dtype=config["dtype"] if config["dtype"] != "auto" else MODEL["dtype"],
        version=VERSION,
    wildcard_constraints:
        case="|".join(POLY_CASES),
    resources:
        gpu=1,
    log:
        f"{OUT}/logs/polysemy_images_{{case}}.log",
    conda:
        "../../envs/diffusion.yaml"
    script:
        "../scripts/polysemy_images.py"


rule polysemy_score:
    input:
        manifests=expand(f"{OUT}/polysemy/cases/{{case}}/images.csv", case=POLY_CASES),
        cases=POLY["cases"],
    output:
        scores=f"{OUT}/polysemy/clip_scores.csv",
    params:
        clip=config["clip"],
        device=config["device"],
        version=VERSION,
    resources:
        gpu=1,
    log:
        f"{OUT}/logs/polysemy_score.log",
    conda:
        "../../envs/clip.yaml"
    script:
        "../scripts/polysemy_score.py"


rule polysemy_rates:
    input:
        scores=rules.polysemy_score.output.scores,
    output:
        rates=f"{OUT}/polysemy/clip_rates.csv",
        table=report(
            f"{OUT}/polysemy/clip_rates.html",
            caption="../report/polysemy_rates.rst",
            category="Polysemous words (SD-HRV)",
            subcategory="misinterpretation rate",
            labels={"figure": "table"},
        ),
        bars=report(
            f"{OUT}/polysemy/clip_rates.png",
            caption="../report/polysemy_rates.rst",
            category="Polysemous words (SD-HRV)",
            subcategory="misinterpretation rate",
            labels={"figure": "bar plot"},
        ),
    params:
        clip_name=config["clip"]["model"],
        version=VERSION,
    log:
        f"{OUT}/logs/polysemy_rates.log",
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/polysemy_rates.py"


rule polysemy_human_sheet:
    input:
        manifests=expand(f"{OUT}/polysemy/cases/{{case}}/images.csv", case=POLY_CASES),
        cases=POLY["cases"],
    output:
        sheet=f"{OUT}/polysemy/human/sheet.csv",
        key=f"{OUT}/polysemy/human/key.csv",
        page=f"{OUT}/polysemy/human/index.html",
        images=directory(f"{OUT}/polysemy/human/images"),
    params:
        seed=POLY["human_seed"],
        version=VERSION,
    log:
        f"{OUT}/logs/polysemy_human_sheet.log",
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/polysemy_human_sheet.py"
