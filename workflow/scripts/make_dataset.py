"""Rule make_dataset: generate (synthetic) or import (GTSRB) the clean dataset."""

from poisonscan.rulelog import rule_log
from poisonscan.steps.data import make_dataset

with rule_log(snakemake.log[0]):
    make_dataset(snakemake.output.dataset, snakemake.params.dataset, snakemake.output.montage)
