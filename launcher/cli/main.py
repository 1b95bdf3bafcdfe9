"""`packrun`: the command line (python-fire). Each command is a thin shell around one module.

Every command turns a `UserError` into `packrun: error: ...` on stderr and exit status 2, and
takes --quiet / --verbose (launcher/core/log.py: messages go through `logging`; results are
printed).
MindSpore is imported only by the commands that train. Each command imports its package inside
itself, so a command loads only what it uses: `packrun status` or `ls` starts in about 100 ms
where importing every command's package costs about 400 ms (jinja2, the preflight, the
renderer), on a login node, for every call.
"""

from __future__ import annotations

import builtins
import functools
import sys

from launcher.core.errors import (
    EXIT_INTERRUPTED,
    EXIT_UNAVAILABLE,
    EXIT_USER_ERROR,
    Unavailable,
    UserError,
)
from launcher.core.log import get_logger, take_level_flags

log = get_logger(__name__)


def flag(name: str, value) -> bool:
    """A command's on/off flag as the spec parses bools (`--wait=false` is off)."""
    from launcher.cli.flags import flag as parse
    return parse(name, value)


def _user_errors_exit_2(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            log.error(f"packrun: error: {e}")
            sys.exit(EXIT_USER_ERROR)
        except Unavailable as e:  # an outage (Slurm's controller): not bad input, retry later
            log.error(f"packrun: error: {e}")
            sys.exit(EXIT_UNAVAILABLE)
        except KeyboardInterrupt as e:  # Ctrl-C outside a run (which reports its own)
            log.error(f"packrun: {e}" if str(e) else "packrun: interrupted (Ctrl-C)")
            sys.exit(EXIT_INTERRUPTED)
    return wrapper


class Commands:
    """packrun: one job file, three ways to run it (debug, msrun/mpirun, Slurm)."""

    @_user_errors_exit_2
    def debug(self, job=None, resume=None, **overrides):
        """Run JOB as one worker process on one device; prints the run directory.

        Any job key is also a flag: packrun debug jobs/demo.toml --epochs=2
        packrun debug --resume RUN_DIR   (continue a debug run from RUN_DIR/last.ckpt)
        """
        from launcher.supervise.debug import debug_run
        sys.exit(debug_run(job, overrides, resume=resume))

    @_user_errors_exit_2
    def demo(self, quick=False, output_dir="runs/demo", workdir="demo_data", fresh=False):
        """The embedded default: transfer learning on scikit-learn's digits, three ways.

        Trains a small ResNet on digits 0-7, then fine-tunes / freezes stem..layer2 / trains
        fixed-feature / trains from scratch on 8-vs-9 with few images, prints the side-by-side
        summary, exports the best model and predicts a few held-out images with it.
        --quick makes it a smoke test (fewer epochs and images).
        The source model is reused while its settings and data are unchanged; --fresh retrains.
        """
        from launcher.demo.main import run_demo
        sys.exit(run_demo(quick=flag("quick", quick), output_dir=output_dir, workdir=workdir,
                          fresh=flag("fresh", fresh)))

    @_user_errors_exit_2
    def keys(self):
        """Print the job-file reference (every key, type, default and meaning)."""
        from launcher.core.spec import reference_markdown
        print(reference_markdown(), end="")

    @_user_errors_exit_2
    def run(self, job=None, workers=None, resume=None, **overrides):
        """Data-parallel run: render JOB's launch and execute it, supervised.

        packrun run JOB --launcher=msrun|mpirun --workers=N [--key=value ...]
        packrun run JOB --nodes=N --hosts=a,b,... [--ssh="-p 2222"]   (every node over ssh)
        packrun run --resume RUN_DIR   (continue from RUN_DIR/last.ckpt)
        The console follows rank 0; a failing rank stops every worker (every node) and is named.
        """
        from launcher.multinode.run import is_multinode
        if is_multinode(job, overrides, resume):
            from launcher.multinode.run import run_command as run_nodes
            sys.exit(run_nodes(job, overrides, workers=workers, resume=resume))
        from launcher.supervise.run import run_command
        sys.exit(run_command(job, overrides, workers=workers, resume=resume))

    @_user_errors_exit_2
    def sweep(self, job=None, grid=None, points=None, launcher=None, workers=None,
              parallel=None, slurm=False, wait=False, **overrides):
        """Run JOB over a set of points: the cross product of --grid KEY=V1,V2,... (repeat it
        for more keys), of the job file's [sweep] table (lr = [0.01, 0.001]), and/or --points=FILE
        (one set of overrides per line: lr=0.01 mode=finetune). Every point is checked before
        any starts; the sweep directory <output_dir>/<name>-sweep-<stamp>/ holds sweep.json and
        one run directory per point, named by the keys that differ.

        Locally the points run one after another as debug runs, or with --launcher/--workers
        as `packrun run` launches; --parallel=N runs N at a time (default 1). --slurm submits
        ONE Slurm job array (--array=0-<n-1>%<parallel>, default all at once), each task one
        point's launch; --wait follows it. At the end: the summary table (again with
        packrun sweep-report SWEEP_DIR).
        """
        from launcher.sweep.local import sweep_command
        from launcher.sweep.plan import repeated_flag
        grids = repeated_flag(sys.argv[1:], "grid") or ([grid] if grid else [])
        sys.exit(sweep_command(job, overrides, grids, points, launcher=launcher,
                               workers=workers, parallel=parallel, slurm=flag("slurm", slurm),
                               wait=flag("wait", wait)))

    @_user_errors_exit_2
    def sweep_report(self, sweep_dir, out=None):
        """A sweep's summary (one row per point: the differing keys, state, best val acc and its
        epoch, last val acc, time; best first) and its report.html, all points side by side
        with the best marked (--out=FILE, default SWEEP_DIR/report.html)."""
        from launcher.sweep.report import sweep_report_command
        print(sweep_report_command(sweep_dir, out))

    @_user_errors_exit_2
    def ls(self, dir="runs"):
        """List the run and sweep directories under DIR (default runs), newest first: name,
        kind, state, epoch of epochs, best acc, world size, start, duration. Slurm runs' states
        come from one squeue call for all of them."""
        from launcher.runs.listing import ls_command
        print(ls_command(dir))

    @_user_errors_exit_2
    def board(self, dir="runs", port=None, host="127.0.0.1"):
        """TensorBoard over DIR (default runs; a sweep directory shows its points by name) on a
        free port (--port=N to choose): prints the URL, and from an ssh session the `ssh -L`
        line for a laptop. Every run writes its event files into RUN_DIR/tb. Needs the optional
        viewer: pip install tensorboard."""
        from launcher.runs.board import board_command
        sys.exit(board_command(dir, port=port, host=host))

    @_user_errors_exit_2
    def logs(self, run_dir, follow=False, ranks=None, grep=None):
        """Every rank's log of RUN_DIR merged in time order, each line prefixed [rank N]
        (the scheduler's, launcher's and Slurm's logs with their own prefixes).
        --follow keeps printing new lines until the run ends; --ranks=0,3 and --grep=REGEX
        filter."""
        from launcher.runs.logs import logs_command
        sys.exit(logs_command(run_dir, follow=flag("follow", follow), ranks=ranks, grep=grep))

    # --- rendering and launch artifacts (launcher/render/artifacts.py, render/ranktable.py) ---

    @_user_errors_exit_2
    def render(self, job, slurm=False, out=None, print=False, sweep=False, grid=None,
               points=None, parallel=None, **overrides):
        """Write a run directory with every launch artifact for JOB, and print the command to run
        next. Nothing is started: this is the dry run of a launch.

        Job keys are flags: packrun render jobs/canidae_finetune.toml --launcher=msrun
        --device=Ascend --nodes=2 --cards_per_node=8 --hosts='10.0.0.[1-2]' --master_port=8118
        --slurm adds job.sbatch (msrun on every node via srun); --out=DIR creates the run
        directory in DIR instead of output_dir; --print shows the artifacts instead of writing.
        Data folders, checkpoint and hccn.conf need not exist here (warnings: they must exist
        where the job runs; run, debug and submit refuse them).
        --sweep (with --grid / --points / --parallel / a [sweep] table, as for `packrun sweep`)
        renders the whole sweep directory (with --slurm its job array) and prints what would
        start it.
        """
        if sweep:
            if out is not None:
                raise UserError("--out is for one run directory; a sweep directory goes in the "
                                "job's output_dir (set --output_dir=DIR)")
            from launcher.sweep.local import render_sweep_command
            from launcher.sweep.plan import repeated_flag
            grids = repeated_flag(sys.argv[1:], "grid") or ([grid] if grid else [])
            builtins.print(render_sweep_command(job, overrides, grids, points,
                                                slurm=flag("slurm", slurm),
                                                parallel=parallel))
            return
        from launcher.render.artifacts import render_command
        render_command(job, overrides, slurm=flag("slurm", slurm), out=out,
                       print_only=flag("print", print))

    @_user_errors_exit_2
    def rank_table(self, devices="0-7", server_ip=None, out=None, hccn_conf=None,
                   device_ips=None, rank_table_version="auto", server_id=None):
        """Write an HCCL rank table: version 1.0 as the Model Zoo's hccl_tools.py writes it, or
        1.2 for an Atlas A3 server in a super pod (this server's part; join the parts with
        merge-rank-tables).

        --devices: any subset, e.g. 0-7, 0,1, 4-7, 0-3,6. --server_ip: this server's IPv4, or
        several comma-separated for one 1.0 table over several servers (rank ids follow their
        order). Device IPs: --device_ips=IP,... (devices x servers, in server order), else
        --hccn_conf (default /etc/hccn.conf), else `hccn_tool -i N -ip -g`.
        --rank_table_version: auto (1.2 when `npu-smi info -t spod-info` names a super pod),
        1.0 or 1.2 (super_device_id and super pod from npu-smi). --server_id: the 1.2 table's
        name for this server (default: --server_ip), e.g. node_0.
        """
        from launcher.render.ranktable import rank_table_command
        print(rank_table_command(devices, server_ip, out, hccn_conf=hccn_conf,
                                 device_ips=device_ips, rank_table_version=rank_table_version,
                                 server_id=server_id))

    @_user_errors_exit_2
    def merge_rank_tables(self, *tables, out=None):
        """Merge per-server rank tables into one: packrun merge-rank-tables A.json B.json
        --out=FILE. Servers keep the order given (version 1.2: grouped by super pod); rank ids
        are renumbered from 0."""
        from launcher.render.ranktable import merge_command
        print(merge_command(tables, out))

    # --- preflight (launcher/preflight/checks.py) ---

    @_user_errors_exit_2
    def check(self, job, all_images=False, quick=False, slurm=False, **overrides):
        """Check JOB without training: data layout and classes, images decode, devices, the
        launch (rank table, hccn.conf, nodes, hosts), master port, room in output_dir, launcher
        tools, and that the pretrained checkpoint fits the network after head filtering.
        Prints one finding per line (ok / warning / error with the fix); exit 0, or 2 on errors.

        Job keys are flags: packrun check jobs/canidae_finetune.toml --launcher=rank_table
        --device=Ascend --cards_per_node=8. --all_images decodes every image (default: a sample
        of 200, or what the job's image_check says when it is "all" or "none");
        --quick skips the network build (the part that imports MindSpore), as `run` does, and
        reports missing data folders, checkpoint or hccn.conf as warnings (as `render` does);
        --slurm checks for `packrun submit` (job.sbatch, sbatch).
        """
        from launcher.preflight.checks import check_command
        sys.exit(check_command(job, overrides, all_images=flag("all_images", all_images),
                               quick=flag("quick", quick), slurm=flag("slurm", slurm)))

    # --- pictures and reports (launcher/preflight/show_batch.py, launcher/runs/report.py) ---

    @_user_errors_exit_2
    def show_batch(self, job, split="train", out=None, **overrides):
        """Write a PNG of one batch after JOB's transforms (class name over each image), and
        print its path. JOB is a job file or a run directory.

        --split=train (augmented, as training sees it) or val; --out=FILE (default
        ./<name>_<split>_batch.png). Job keys are flags: --image_size=224 --min_crop_scale=0.3
        """
        from launcher.preflight.show_batch import show_batch_command
        print(show_batch_command(job, overrides, split=split, out=out))

    @_user_errors_exit_2
    def report(self, *run_dirs, out=None):
        """Write a self-contained report.html for one or more run directories, and print its
        path: spec, per-epoch table, pictures, timings; several runs are also compared side by
        side. --out=FILE (default RUN_DIR/report.html for one run, ./report.html for several).
        A sweep directory gives its summary and all its points side by side (sweep-report).
        """
        from launcher.core.rundir.sweepdir import is_sweep_dir
        if len(run_dirs) == 1 and is_sweep_dir(run_dirs[0]):  # a sweep: all its points
            from launcher.sweep.report import sweep_report_command
            print(sweep_report_command(run_dirs[0], out))
            return
        from launcher.runs.report import write_report
        print(write_report(run_dirs, out))

    # --- using a trained model (src/infer/export.py, src/infer/predict.py) ---

    @_user_errors_exit_2
    def export(self, run_dir, checkpoint="best", format="MINDIR", out=None, device="CPU"):
        """Export a run's model for inference: packrun export RUN_DIR [--checkpoint=best|last|PATH]
        [--format=MINDIR|ONNX|MINDIR,ONNX] [--out=FILE]

        The job's network (arch, classes, image size) in inference mode, checked against the
        checkpoint after export; FILE.json beside it records the class names and the evaluation
        transforms (resize, crop, mean, std). Default FILE: RUN_DIR/best.mindir (or .onnx).
        ONNX needs the optional extra: pip install 'packrun[onnx]'.
        """
        from src.infer.export import export_command
        export_command(run_dir, checkpoint, format, out, device)

    @_user_errors_exit_2
    def predict(self, source, *images, top_k=1, csv=None, picture=None, checkpoint="best",
                device="CPU"):
        """Classify images: packrun predict (RUN_DIR | MODEL_FILE) IMAGES_OR_DIRS... [--top_k=1]
        [--csv=FILE] [--picture=FILE]

        SOURCE is a run directory (its --checkpoint, default best), an exported .mindir or
        .onnx file (with FILE.json beside it). Prints path, class and probability per image;
        --csv writes them, --picture the prediction grid. Undecodable images are named and the
        exit status is 2 after the others are predicted.
        """
        from src.infer.predict import predict_command
        sys.exit(predict_command(source, images, top_k=top_k, csv=csv, picture=picture,
                                 checkpoint=checkpoint, device=device))

    # --- Slurm (launcher/slurm/client.py) ---

    @_user_errors_exit_2
    def submit(self, job, wait=False, out=None, **overrides):
        """Submit JOB to Slurm: render job.sbatch into a new run directory, sbatch it, record
        and print the job id.

        Job keys are flags: packrun submit jobs/canidae_finetune.toml --nodes=2 --cards_per_node=8
        --partition=p --account=a --time=4:00:00 --gres=gpu:8 --qos=normal
        --wait follows the job to its end (rank 0's log on the console) and exits with its
        status: 0 when COMPLETED, non-zero for FAILED / CANCELLED / TIMEOUT / ... (printed).
        --out=DIR creates the run directory in DIR instead of output_dir.
        """
        from launcher.slurm.submit import submit_command
        sys.exit(submit_command(job, overrides, wait=flag("wait", wait), out=out))

    @_user_errors_exit_2
    def status(self, run_dir):
        """State (running / completed / failed / stopped / restarting), attempt, epoch and step
        reached, best accuracy and the failure summary of a run directory: local runs (debug,
        run) and Slurm runs (also Slurm's state, elapsed time and nodes)."""
        from launcher.runs.status import status_command
        print(status_command(run_dir))

    @_user_errors_exit_2
    def cancel(self, run_dir):
        """Cancel the Slurm job of a run directory (scancel); of a sweep directory, its job array
        (every task, pending or running)."""
        from launcher.core.rundir.sweepdir import is_sweep_dir
        from launcher.slurm.client import cancel, job_id_of
        from launcher.sweep.array import cancel_array
        if is_sweep_dir(run_dir):
            print(f"packrun: {cancel_array(job_id_of(run_dir))}")
            return
        print(f"packrun: {cancel(run_dir)}")

    # --- site customisation (launcher/node/launch.py, templates) ---

    @_user_errors_exit_2
    def node_launch(self, run_dir, node_rank=None, master_addr=None, master_port=None):
        """Start this node's workers of RUN_DIR (rendered with `packrun render JOB --slurm`),
        for your own Slurm script: srun --ntasks-per-node=1 packrun node-launch RUN_DIR

        The node rank comes from SLURM_NODEID, the master from the job's master_addr or the
        allocation's first host, the port from master_port or 20000 + SLURM_JOB_ID % 20000.
        Outside Slurm give --node_rank, --master_addr and --master_port. Exits with msrun's
        status; SIGTERM/SIGINT stop the workers, SIGUSR1 asks them to stop after this step.
        """
        from launcher.node.launch import node_launch_command
        sys.exit(node_launch_command(run_dir, node_rank, master_addr, master_port))

    @_user_errors_exit_2
    def templates(self, dir=None, copy=None, template_dir=""):
        """List the launch templates with the variables each receives; with --template_dir=DIR
        mark the ones DIR overrides. packrun templates --copy NAME DIR copies one into DIR to
        start a site override (then set template_dir = "DIR" in the job file).
        """
        from launcher.render.templates import templates_command
        print(templates_command(copy, dir, template_dir))


def run(argv: list[str]) -> str | int | None:
    """The command line `argv` (after the program's name) run here: the status the process
    ends with (an int, None for 0, or a message for stderr, as sys.exit takes it)."""
    from launcher.cli.flags import keep_text  # job-key values as typed (fire would eval them)
    from launcher.cli.help import dispatch_help
    argv = take_level_flags(argv)  # --quiet / --verbose, for every command
    code: str | int | None = 0
    try:
        code = dispatch_help(Commands, argv)
        if code is None:
            import fire  # not for help: fire (and the asyncio it loads) is most of its start
            code = 0
            fire.Fire(Commands(), command=keep_text(argv), name="packrun")
    except KeyboardInterrupt:  # Ctrl-C before a command began (imports, help): no traceback
        code = EXIT_INTERRUPTED
    except SystemExit as e:
        code = e.code
    return code


def main():
    code = run(sys.argv[1:])
    if "mindspore" in sys.modules:  # export, predict, the demo: skip MindSpore's slow teardown
        from launcher.core.quick_exit import leave
        leave(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
