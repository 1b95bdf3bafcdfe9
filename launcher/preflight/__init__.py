"""Checks before anything runs: the data's layout and decodable images (`data`), every check of
`packrun check` and the cheap gate `run`/`submit` pass first (`checks`), the Ascend node checks
each node's launch runs before any rank starts (`node`), whether a run
directory can be resumed (`resume`), and a picture of one batch (`show_batch`).

May import: `launcher.render`, `launcher.core`; `src` only inside `checks` (the network check)
and `show_batch` (the data pipeline), which need MindSpore.
"""
