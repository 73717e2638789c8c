# Head Relevance Vectors: one command reproduces the pipeline.
#   snakemake --cores 2                                  (demo, embedded tiny model)
#   snakemake --configfile config/paper.yaml --cores all (the paper, SD v1.4)
from snakemake.utils import min_version

import hrv.config
from hrv.workflow import code_version, shard_plan

min_version("8.20")


configfile: "config/config.yaml"


config.update(hrv.config.resolve(config))
hrv.config.validate(config, workflow.source_path("workflow/schemas/config.schema.yaml"))

RUN = config["run"]
OUT = f"results/{RUN}"
VERSION = code_version()


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/hrv.smk"
include: "workflow/rules/provenance.smk"
include: "workflow/rules/polysemy.smk"
include: "workflow/rules/weakening.smk"
include: "workflow/rules/toy.smk"
include: "workflow/rules/multiconcept.smk"
include: "workflow/rules/editing.smk"
include: "workflow/rules/bgdino.smk"


rule all:
    default_target: True
    input:
        rules.hrv_merge.output,
        rules.hrv_heatmap.output,
        rules.provenance.output,
        rules.polysemy_rates.output if config["polysemy"]["enabled"] else [],
        rules.polysemy_human_sheet.output if config["polysemy"]["enabled"] else [],
        expand(rules.polysemy_images.output.grid, case=POLY_CASES),
        rules.weakening_overview.output if config["weakening"]["enabled"] else [],
        expand(rules.weakening_curves.output.png, experiment=list(WEAK_EXPERIMENTS)),
        expand(rules.weakening_grid.output.png, experiment=list(WEAK_EXPERIMENTS)),
        rules.toy_checks.output if config["toy"]["enabled"] else [],
        rules.toy_neglect.output if config["toy"]["enabled"] and config["toy"]["neglect"]["enabled"] else [],
        rules.multiconcept_tables.output if MC["enabled"] else [],
        expand(rules.multiconcept_grid.output.png, set=list(MC_SETS)),
        EDIT_TARGETS,
        BGD_TARGETS,
