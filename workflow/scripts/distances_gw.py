"""Rules distances_gw (the target class group) and distances_gw_classes (the GW kNN graphs of
every class of the explanation store): Gromov-Wasserstein distances over Dask."""

# Dask's worker processes are spawned and re-import this file as __mp_main__,
# where the snakemake object does not exist: run only in the main process.
if __name__ == "__main__":
    from poisonscan.parameters import performance_values
    from poisonscan.rulelog import rule_log
    from poisonscan.steps.distances import distances_gw, distances_gw_classes

    with rule_log(snakemake.log.log, snakemake.input):
        every_class = snakemake.rule == "distances_gw_classes"
        (distances_gw_classes if every_class else distances_gw)(
            snakemake.input.store if every_class else snakemake.params.group,
            snakemake.output.store,
            snakemake.params.gw,
            snakemake.config["dask"],  # platform: not a param, changing it reruns nothing
            threads=snakemake.threads,
            performance_report=snakemake.log.dask_report,
            performance=performance_values(snakemake.resources),
            sidecar=snakemake.input.sidecar,
        )
