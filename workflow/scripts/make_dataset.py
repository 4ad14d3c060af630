"""Rule make_dataset: generate (synthetic) or import (GTSRB, a folder, an npz) the dataset."""

from poisonscan.rulelog import rule_log
from poisonscan.steps.data import make_dataset

with rule_log(snakemake.log[0], snakemake.input):
    make_dataset(
        snakemake.output.dataset,
        snakemake.params.dataset,
        snakemake.output.montage,
        bad_input=snakemake.output.bad_input,
    )
