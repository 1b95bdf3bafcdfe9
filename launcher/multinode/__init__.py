"""A job on several servers without a scheduler: `packrun run JOB --nodes=N --hosts=...` starts,
watches, stops and restarts every node over ssh (`run`). `ssh` builds every ssh command line and
holds the grammar of the options a user may add; `probe` is what a node says about itself and
`preflight` judges the answers before anything starts; `policy` decides which node failed and
how an attempt ended. The node side (the node program each node runs, `python -m launcher.node
host-run`) is launcher/node/host.py.

May import: `launcher.slurm`, `launcher.supervise`, `launcher.preflight`, `launcher.render`,
`launcher.core`.
"""
