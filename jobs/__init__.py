"""Entry points for ``ray job submit``, run as modules from the working dir that Ray uploads
(``python -m jobs.synthesize ...``), so the package is found there whether or not the cluster's
image has it installed."""
