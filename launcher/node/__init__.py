"""The node side: programs the rendered launch scripts run on compute nodes, behind one stable
entry point, `python -m launcher.node VERB` (`main`): core lists, host names, the rank table's
server index, the Slurm batch protocol (`batch`), the supervision of a server's ranks, a sweep's
array task, `packrun node-launch` (`launch`), and the node program of a launch over ssh
(`host`: `host-run`, `stop-node`).
Rendered scripts name only `launcher.node`, so modules can move without re-rendering.

May import: `launcher.multinode`, `launcher.slurm`, `launcher.supervise`, `launcher.preflight`,
`launcher.render`, `launcher.core`.
"""
