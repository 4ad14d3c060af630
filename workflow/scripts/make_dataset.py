"""Rule make_dataset: generate (synthetic) or import (GTSRB) the clean dataset."""

from poisonscan import steps

steps.setup_logging(snakemake.log[0])
steps.make_dataset(snakemake.output.dataset, snakemake.params.dataset, snakemake.output.montage)
