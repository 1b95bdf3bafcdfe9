"""The run-directory protocol: what a run directory holds and who writes it.

`names` is the one home of every file name, exit status, schema number and PACKRUN_* variable
of the protocol (templates receive them as `files.*`); `schema` checks the schema of the JSON
files packrun writes there; `job_json` writes and reads job.json (the resolved spec); `atomic`
writes files whole; `layout` creates run directories; `lock` is the one-launch-at-a-time lock;
`attempts` numbers launches and records their ends; `failure` and `metrics` are the failure
report and the epoch rows; `state` is the one reader of a run directory's state (one `Phase`
enum); `sweepdir` reads a sweep directory (sweep.json).

May import: `launcher.core` only.
"""
