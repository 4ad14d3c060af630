"""Rule summary: one CSV row per dataset x scenario x method."""

import logging

from poisonscan import steps

steps.setup_logging(snakemake.log[0])
table = steps.summarize(snakemake.input.evaluations, snakemake.output.summary)
logging.getLogger("poisonscan").info("summary:\n%s", table)
