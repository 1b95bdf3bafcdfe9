"""Local processes: the one place that starts children and forwards signals (`processes`), the one
supervisor of a node's ranks (`supervisor`), the restart loop (`restarts`), and the commands
built on them: `packrun debug` (`debug`) and `packrun run` (`run`).

May import: `launcher.preflight`, `launcher.render`, `launcher.core`.
"""
