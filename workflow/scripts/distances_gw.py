"""Rule distances_gw: Gromov-Wasserstein distances of the target class group over Dask."""

# Dask's worker processes are spawned and re-import this file as __mp_main__,
# where the snakemake object does not exist: run only in the main process.
if __name__ == "__main__":
    from poisonscan.parameters import performance_values
    from poisonscan.rulelog import rule_log
    from poisonscan.steps.distances import distances_gw

    with rule_log(snakemake.log.log, snakemake.input):
        distances_gw(
            snakemake.params.group,
            snakemake.output.store,
            snakemake.params.gw,
            snakemake.config["dask"],  # platform: not a param, changing it reruns nothing
            threads=snakemake.threads,
            performance_report=snakemake.log.dask_report,
            performance=performance_values(snakemake.resources),
            sidecar=snakemake.input.sidecar,
        )
