"""An HTCondor EMULATOR for tests: it is not HTCondor, and nothing here is fit for production.

Why: no HTCondor daemons can be installed on the test machines (no Debian package; the PyPI
``htcondor`` wheel has only the Python bindings), yet the HTCondor backend must be tested against
something that behaves like a schedd: a persistent queue, jobs that really run, and the tools'
real output formats.

What it is: executables in ``bin/`` named ``condor_submit``, ``condor_q``, ``condor_history``,
``condor_rm``, ``condor_hold``, ``condor_release`` and ``condor_status`` (bash wrappers that run
``emulator.py`` with ``${ILP_EMULATOR_PYTHON:-python3}``; the module needs only the standard
library and uses ``classad2`` from the htcondor wheel when importable). Put ``bin/`` first on PATH,
or name the executables by full path.

What it does:

* keeps a real job queue on disk in ``$ILP_CONDOR_EMULATOR_DIR`` (required): ``queue.json``
  (rewritten atomically: tmp + os.replace), ``history.jsonl`` (jobs that left the queue) and
  ``jobs/<cluster>.<proc>/run<N>/`` per run; every command takes an ``fcntl.flock`` on ``lock``,
  so concurrent commands are safe; ClusterIds grow monotonically across restarts;
* parses the submit-description subset backends use (see ``emulator.parse_submit`` /
  ``build_job``), one command per line, a trailing backslash continues it, ``#`` starts a comment line:
  executable, arguments and environment in HTCondor's old and new syntaxes (the
  same rules as condor_arglist.cpp / env.cpp), initialdir, input/output/error/log, request_cpus /
  request_memory / request_disk / request_gpus with K/M/G/T units, hold, batch_name, priority,
  kill_sig / remove_kill_sig / hold_kill_sig, job_max_vacate_time, periodic_remove / periodic_hold /
  periodic_release, on_exit_remove / on_exit_hold, transfer settings (stored), getenv,
  ``+Attr = value`` / ``MY.Attr = value`` / ``-Attr =``, ``$(Cluster)``/``$(ClusterId)``/``$(Process)``/
  ``$(ProcId)``/``$(name)``/``$(name:default)``/``$ENV(X)`` macros, ``queue`` and ``queue N``;
  unknown commands are kept (not in the ad), like HTCondor ignores them;
* serves several accounts as HTCondor's root schedd does: the queue directory may be shared by
  every account that submits (files written 0644, the lock and history 0666); a pass run as root
  acts for every job's Owner (the job, its standard files and its user log are the Owner's; the
  run directory and the memory cgroup's ``cgroup.procs`` are handed to them), a pass run by any
  other user acts only on that user's own jobs. ``_schedd QUEUE_DIR [SECONDS]`` is a root loop
  that passes every SECONDS (0.2) until SIGTERM: the tests start one beside each HTCondor sidecar
  that runs as the service account;
* runs jobs for real: each command first does one "schedd pass": reap finished runs, evaluate
  periodic policies, retire finished jobs to the history, start Idle jobs while fewer than
  ``$ILP_CONDOR_EMULATOR_SLOTS`` (default 4) are running. So a submitted job stays Idle until the
  next command (condor_release passes again after releasing, as HTCondor's sends a RESCHEDULE;
  ``ILP_CONDOR_EMULATOR_SLOTS=0`` keeps jobs Idle). A started job gets a detached supervisor
  process (new session, reparented to init) that runs the executable in its own process group with
  cwd = Iwd, stdio from In/Out/Err, and an environment made only of the job's Environment plus what
  a starter adds: ``_CONDOR_JOB_AD`` / ``_CONDOR_MACHINE_AD`` (old-syntax ad files),
  ``_CONDOR_SCRATCH_DIR`` and ``TMPDIR``/``TMP``/``TEMP`` (a per-run scratch dir), ``_CONDOR_SLOT``,
  ``_CONDOR_JOB_IWD``, ``_CONDOR_JOB_PIDS``, ``BATCH_SYSTEM=HTCondor`` and ``OMP_NUM_THREADS`` (and
  MKL/OPENBLAS/NUMEXPR) = RequestCpus; the job's variables win except ``_CONDOR_*``. The supervisor
  writes the outcome (exit code or signal, times) atomically and then does a schedd pass itself, so
  states advance without any command being the job's parent; after the main process exits, the
  rest of its process group is SIGKILLed, like a starter does;
* condor_rm / condor_hold of a running job: the supervisor sends RemoveKillSig / HoldKillSig /
  KillSig (default SIGTERM) to the job's process group, then SIGKILL after JobMaxVacateTime
  (default 10 s, or ``$ILP_CONDOR_EMULATOR_MAX_VACATE_TIME``). A removed running job shows
  JobStatus 3 in condor_q until its processes are gone, then moves to the history (with no
  ExitCode/ExitSignal and CompletionDate 0: it was removed, not completed). A job that exits by
  itself completes (JobStatus 4) with ExitCode, or with ExitBySignal true and ExitSignal;
* attributes as condor_submit and the schedd set them (names from condor_attributes.h): those of
  every ad (ClusterId, ProcId, GlobalJobId, JobStatus, LastJobStatus, EnteredCurrentStatus, QDate,
  CompletionDate, ExitBySignal, Owner, User, Cmd, Arguments or Args, Environment, Iwd, In, Out,
  Err, RequestCpus, RequestMemory, RequestDisk, NumJobStarts, RemoteWallClockTime, policies, ...)
  and those that exist only when they apply: JobStartDate/JobCurrentStartDate/RemoteHost once
  started, ExitCode or ExitSignal once exited, HoldReason/HoldReasonCode/HoldReasonSubCode while
  held, LastHoldReason*/ReleaseReason after a release, RemoveReason once removed, UserLog,
  JobBatchName, RequestGPUs, KillSig, JobMaxVacateTime when submitted; +Custom attributes as given;
* prints ads like HTCondor 23+: condor_q/condor_history ``-json`` in ClassAdJsonUnParser's exact
  layout (attributes sorted case-insensitively, expressions as ``"\\/Expr(...)\\/"``; condor_q
  prints nothing for no jobs, condor_history prints ``[`` ``]``), ``-long``, ``-af``; the
  messages and exit codes of condor_submit and condor_rm/hold/release follow the HTCondor sources
  (including condor_rm's exit 0 with "There are no jobs in the queue" when the queue is empty);
* writes user-log events 000, 001, 005, 009, 012, 013 in the classic text format when ``log`` is set.

What it does NOT reproduce:

* no daemons, no negotiator or matchmaking: Requirements/Rank are stored, never matched; one
  partitionable "slot1@<host>" whose only limit is the number of running jobs (resources are
  reported by condor_status; only memory is enforced, through a cgroup v1 memory group per job
  where /sys/fs/cgroup/memory is writable: an OOM kill inside holds the job with code 34, as the
  starter does); no preemption, no suspension (JobStatus 6 and 7 never
  occur), no JobRunCount-style accounting beyond NumJobStarts/NumJobCompletions/NumHolds;
* no file transfer or spooling: the job runs directly in Iwd and writes Out/Err there as it goes
  (as with ``should_transfer_files = NO`` on a shared filesystem); ``-spool`` is accepted but
  copies nothing and the job does not pass through the "Spooling input data files" hold;
  transfer_input_files / transfer_output_files are stored only;
* no security or authentication; every job belongs to the user running the commands; there is no
  -name/-pool choice (accepted and ignored);
* policies are evaluated lazily, on every emulator command or job exit (HTCondor: every
  PERIODIC_EXPR_INTERVAL); while a job runs, policies see RemoteWallClockTime including the current
  run (HTCondor updates it at the end of a run); leave_in_queue is stored, not honoured
  (``$ILP_CONDOR_EMULATOR_LEAVE_QUEUE_SECONDS``, default 0, keeps finished jobs in the queue instead);
* with the standard-library evaluator, expressions support literals, attribute references (MY./
  TARGET.; TARGET is undefined), ``+ - * / %``, comparisons (== on strings ignores case),
  ``=?=``/``=!=``/is/isnt, ``&& || !`` with three-valued logic, ``?:``, lists, and time(),
  ifThenElse, isUndefined, isError, stringListMember, stringListIMember, strcat, toLower, toUpper,
  size, int, real, string, min, max, member, regexp (no bitwise operators, subscripts, nested ads);
  with classad2 importable, the real ClassAd library evaluates (and htcondor2, when importable, is
  imported with ``CONDOR_CONFIG=ONLY_ENV`` so that HTCondor's own functions such as
  stringListMember exist); ``$ILP_CONDOR_EMULATOR_EVALUATOR`` = auto | builtin | classad2.
  Expressions are printed the way the ClassAd library unparses them (``=?=`` as ``is`` and reals as
  ``%1.15E`` in JSON, old syntax in -long and policy messages), for the grammar above;
* the submit language lacks include, if/else, ``@=`` here-documents, ``queue ... from/in/matching``
  (an error), late materialization, and the universes other than vanilla (an error); default
  RequestMemory is 128 (HTCondor's JOB_DEFAULT_REQUESTMEMORY default), GlobalJobId uses the host
  name as schedd name;
* jobs that cannot start are held like HTCondor does (code 6 exec failure, 7/8 stdio, 14 Iwd) but
  without a shadow: a vanished supervisor just sends the job back to Idle.
"""
