"""What Ascend's own tools and files say, read without running anything: `npu-smi info` tables
and key-value pages (`npusmi`), `hccn_tool` answers (`hccn`), HCCL rank tables of version 1.0 and
1.2 checked as HCCL's parser checks them (`ranktable`), and the error lines of CANN, HCCL and
msrun that explain a failed launch (`signatures`). The formats are the real ones collected in
the reference folder (docs/ascend.md lists the sources).

May import: the standard library only. Running the tools is the caller's (launcher.preflight).
"""
