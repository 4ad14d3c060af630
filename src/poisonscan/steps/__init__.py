"""One function per workflow rule, one module per rule file of the same name.

``rules/<stage>.smk`` runs the functions of ``poisonscan.steps.<stage>``:
paths and plain config dicts in, files out. The scripts in
``workflow/scripts/`` only unpack ``snakemake.*`` and call them, so every step
also runs (and is tested) without Snakemake. Step modules do not import each
other, and this package imports none of them, so a rule loads only what its
step needs (the analysis rules never load torch) and its code hash
(:func:`poisonscan.codehash.code_hash`) changes only with the code it runs.
"""
