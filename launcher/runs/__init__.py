"""Reading run directories after or while they run: `packrun status` (`status`), `ls` (`listing`),
`logs` (`logs`), `report` (`report`) and `board` (`board`: TensorBoard over the runs' event
files). Everything comes from the directories' files through
`launcher.core.rundir.state` (the one reader), plus Slurm's view of submitted runs (its states
mapped by `launcher.slurm.client`).

May import: `launcher.node`, `launcher.slurm`, and every layer below; `src.pictures` only inside
`report` (the curves figure).
"""
