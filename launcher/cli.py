"""`packrun`: the command line (python-fire). Each command is a thin shell around one module.

Every command turns a `UserError` into `packrun: error: ...` on stderr and exit status 2.
MindSpore is imported only by the commands that train.
"""

from __future__ import annotations

import functools
import sys

import fire

from launcher.errors import EXIT_USER_ERROR, UserError


def _user_errors_exit_2(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            print(f"packrun: error: {e}", file=sys.stderr, flush=True)
            sys.exit(EXIT_USER_ERROR)
    return wrapper


class Commands:
    """packrun: one job file, three ways to run it (debug, msrun/mpirun, Slurm)."""

    @_user_errors_exit_2
    def debug(self, job, **overrides):
        """Run JOB as one worker process on one device; prints the run directory.

        Any job key is also a flag: packrun debug jobs/demo_target.toml --epochs=2
        """
        from launcher.local_run import debug_run
        sys.exit(debug_run(job, overrides))

    @_user_errors_exit_2
    def demo(self, quick=False, output_dir="runs/demo", workdir="demo_data"):
        """The embedded default: transfer learning on scikit-learn's digits, three ways.

        Trains a small ResNet on digits 0-7, then fine-tunes / trains fixed-feature / trains from
        scratch on 8-vs-9 with few images, and prints the side-by-side summary.
        --quick makes it a smoke test (fewer epochs and images).
        """
        from launcher.demo import run_demo
        sys.exit(run_demo(quick=bool(quick), output_dir=output_dir, workdir=workdir))

    @_user_errors_exit_2
    def keys(self):
        """Print the job-file reference (every key, type, default and meaning)."""
        from launcher.spec import reference_markdown
        print(reference_markdown(), end="")

    # --- rendering and launch artifacts (launcher/render.py, launcher/ranktable.py) ----------
    # (commands render / rank_table / merge_rank_tables are added below this line)

    @_user_errors_exit_2
    def render(self, job, slurm=False, out=None, print=False, **overrides):
        """Write a run directory with every launch artifact for JOB, and print the command to run
        next. Nothing is started: this is the dry run of a launch.

        Job keys are flags: packrun render jobs/x.toml --launcher=msrun --device=Ascend
        --nodes=2 --cards_per_node=8 --hosts='10.0.0.[1-2]' --master_port=8118
        --slurm adds job.sbatch (msrun on every node via srun); --out=DIR creates the run
        directory in DIR instead of output_dir; --print shows the artifacts instead of writing.
        """
        from launcher.render import render_command
        render_command(job, overrides, slurm=bool(slurm), out=out, print_only=bool(print))

    @_user_errors_exit_2
    def rank_table(self, devices="0-7", server_ip=None, out=None, hccn_conf=None,
                   device_ips=None):
        """Write an HCCL rank table (version 1.0, as the Model Zoo's hccl_tools.py writes it).

        --devices: any subset, e.g. 0-7, 0,1, 4-7, 0-3,6. --server_ip: this server's IPv4, or
        several comma-separated for one table over several servers (rank ids follow their
        order). Device IPs: --device_ips=IP,... (devices x servers, in server order), else
        --hccn_conf (default /etc/hccn.conf), else `hccn_tool -i N -ip -g`.
        """
        from launcher.ranktable import rank_table_command
        print(rank_table_command(devices, server_ip, out, hccn_conf=hccn_conf,
                                 device_ips=device_ips))

    @_user_errors_exit_2
    def merge_rank_tables(self, *tables, out=None):
        """Merge per-server rank tables into one: packrun merge-rank-tables A.json B.json
        --out=FILE. Servers keep the order given; rank ids are renumbered from 0."""
        from launcher.ranktable import merge_command
        print(merge_command(tables, out))


def main():
    fire.Fire(Commands(), name="packrun")


if __name__ == "__main__":
    main()
