"""Rule summary: one CSV row per dataset x scenario x method."""

import logging

from poisonscan import steps
from poisonscan.steps import cluster

steps.setup_logging(snakemake.log[0])
table = cluster.summarize(snakemake.input.evaluations, snakemake.output.summary)
logging.getLogger("poisonscan").info("summary:\n%s", table)
