"""Locust event listeners that run the harness side of a test (installed once, on import of harness.locust).

Order of a run, per role (Locust's own event order: its documentation on event hooks):
- ``init_command_line_parser``: register the options (harness.locust.options);
- ``init``: validate options (a bad one ends the process with one line, exit 2), bind the
  :class:`~harness.locust.run.RunContext`, install the web UI tabs (master/local);
- ``test_start``: master stamps run id and worker shares into the options copied to workers;
  local/master open RUN_DIR, write run.json, start the 1 s flusher and the optional /metrics scraper;
- ``test_stopping``: stamp ``stopping_ns`` (run.json; the end of the measured window); with
  ``--stop-timeout 0`` kill every stream at once, before Locust's own stop work (:func:`_on_test_stopping`);
- ``test_stop``: cancel open-loop streams still in flight; workers send their final batch;
  local finalizes; the master finalizes once every final batch is in;
- ``quitting``: when it comes before the test's end (Ctrl-C, SIGTERM) the run is *interrupted*: the
  users are stopped first (Locust's ``--stop-timeout`` applies; a second Ctrl-C cancels the streams still
  in flight), so every record is written before finalization, and run.json says
  ``complete: false, interrupted: true`` (exit code 130); the master drains late final batches
  (harness.locust.shipping.drain) and finalizes; ``process_exit_code`` is set (harness.locust.finalize).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import gevent
from locust import events
from locust.runners import STATE_RUNNING, STATE_SPAWNING, MasterRunner, WorkerRunner

from harness.locust import clock_sync, prometheus_exporter, shipping, webui
from harness.locust.finalize import finalize
from harness.locust.options import OptionError, register, resolve
from harness.locust.run import RunContext, bind, current
from harness.records import write_run_meta

logger = logging.getLogger("harness.locust")
_EV_TIMER = 0x100  #: libev's event bit of a timer (the kind of watcher cut_streams feeds)

_state: dict[str, Any] = {"collector": shipping.Collector(), "flusher": None, "scraper": None, "exit_code": None,
                          "interrupted": False, "test_stopped": False, "cut_watcher": None}


def _role(runner: Any) -> str:
    if isinstance(runner, MasterRunner):
        return "master"
    if isinstance(runner, WorkerRunner):
        return "worker"
    return "local"


def _die(message: str) -> None:
    sys.stderr.write(f"stream-harness: error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(2)


@events.init_command_line_parser.add_listener
def _on_parser(parser: Any) -> None:
    register(parser)
    clock_sync.add_arguments(parser)
    prometheus_exporter.add_arguments(parser)


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    role = _role(environment.runner)
    try:
        opts = resolve(environment.parsed_options)
        if opts.prompt_file and role != "worker":
            from harness.locust.prompts import check_prompt_file

            check_prompt_file(opts.prompt_file)
    except (OptionError, ValueError) as exc:
        _die(str(exc))
        return
    ctx = RunContext(environment, role, opts)
    bind(ctx)
    clock_sync.register(environment, role)  # workers' clocks onto the master's (distributed runs)
    prometheus_exporter.register(environment, ctx)  # --prometheus-port
    if role == "master":
        environment.runner.register_message(shipping.MSG_FINAL, _on_final_message)
    if role != "worker":
        webui.install(environment, lambda: current().live)
        # Added after the runner's own listeners, so it fires first (quitting fires in reverse): the
        # master's listener stops the test, which would otherwise look like a normal end.
        environment.events.quitting.add_listener(_on_quitting_first)


@events.test_start.add_listener
def _on_test_start(environment: Any, **_: Any) -> None:
    ctx = current()
    runner = environment.runner
    try:
        ctx.opts = resolve(environment.parsed_options)
    except OptionError as exc:  # changed in the web UI form: keep the run going on the last good options
        logger.error("stream-harness: %s (keeping the previous options)", exc)
    if not (environment.host or all(getattr(c, "host", None) for c in environment.user_classes)):
        logger.error("stream-harness: --host is required (the server's base URL, e.g. http://127.0.0.1:3000)")
        gevent.spawn_later(0, runner.quit)
    _state["interrupted"] = _state["test_stopped"] = False
    if ctx.role != "master":
        warm_stop_path()
    if ctx.role == "master":
        workers = sorted(c.id for c in runner.clients.all)
        ctx.start()
        opts_ns = environment.parsed_options
        opts_ns.harness_run_id = ctx.run_id
        opts_ns.harness_workers = max(1, len(workers))
        opts_ns.harness_shares = {cid: i for i, cid in enumerate(workers)}
        _state["collector"] = shipping.Collector()
        _state["collector"].expected.update(workers)
    elif ctx.role == "worker":
        ctx.node = f"w{getattr(environment.parsed_options, 'harness_shares', {}).get(runner.client_id, runner.worker_index)}"
        ctx.start(getattr(environment.parsed_options, "harness_run_id", None))
    else:
        ctx.start()
    if ctx.role != "worker":
        _start_run_files(ctx, environment)


def warm_stop_path() -> None:
    """Fill the caches that Locust's ``Runner.stop`` reads, while no stream runs yet.

    ``Runner.stop`` logs its caller with ``inspect.stack()``, before any event fires: the first call maps
    every loaded module to its file (``inspect.getmodule``) and reads the source of each frame's file
    (linecache), 46 ms on a loaded 2-core machine (0.05 ms once warm). Every stream stalls that long at
    the run time limit, and its tokens are stamped late. Warmed here, at each test's start."""
    import inspect
    import linecache

    import locust.main
    import locust.runners

    inspect.stack()
    for mod in (locust.runners, locust.main):
        linecache.getlines(mod.__file__)


def _start_run_files(ctx: RunContext, environment: Any) -> None:
    assert ctx.run_dir is not None
    write_run_meta(ctx.run_dir, run_id=ctx.run_id, scenario=ctx.scenario, host=environment.host,
                   options=ctx.opts.as_dict(), role=ctx.role, started_wall_ns=time.time_ns(),
                   user_classes=sorted(c.__name__ for c in environment.user_classes or []))
    logger.info("stream-harness: run %s writes %s", ctx.run_id, ctx.run_dir)
    _state["flusher"] = gevent.spawn(_flush_loop, ctx)
    if ctx.opts.scrape_metrics and environment.host:
        from harness.client.prometheus_scrape import MetricsScraper

        _state["scraper"] = MetricsScraper(environment.host, ctx.run_dir).start()


def _flush_loop(ctx: RunContext) -> None:
    """Local/master: flush the sink every second; local also checks the client-bound signals."""
    while ctx.active:
        gevent.sleep(1.0)
        ctx.drain_in_slices()  # queued records reach the file within the second, even if the loop was never idle
        if ctx.sink is not None:
            ctx.sink.flush()
        if ctx.role == "local" and ctx.active:
            ctx.check_client_bound()


@events.report_to_master.add_listener
def _on_report(client_id: str, data: dict, **_: Any) -> None:
    ctx = current()
    if ctx.role == "worker" and ctx.active:
        data[shipping.KEY] = shipping.worker_payload(ctx, final=False)


@events.worker_report.add_listener
def _on_worker_report(client_id: str, data: dict, **_: Any) -> None:
    ctx = current()
    collector = _state["collector"]
    if client_id in collector.finals:
        collector.stats_after_final.add(client_id)
    payload = data.get(shipping.KEY)
    if payload:
        shipping.merge(ctx, collector, client_id, payload)


def _on_final_message(environment: Any, msg: Any, **_: Any) -> None:
    shipping.merge(current(), _state["collector"], msg.node_id, msg.data or {})


@events.test_stopping.add_listener
def _on_test_stopping(environment: Any, **_: Any) -> None:
    """The stop begins (run time reached, web UI stop, quit): stamp it and, for a forced stop, cut the
    streams in flight at once, before Locust's own stop work.

    ``run.json`` ``stopping_ns`` (CLOCK_MONOTONIC) ends the measured window: every token stamped before
    it was read before any stop work ran (gevent is cooperative: nothing else runs while this listener
    does). With ``--stop-timeout 0`` Locust kills the users one small greenlet at a time, and the
    streams not yet killed keep reading tokens in between, late (13-25 ms at 256 streams on an idle
    machine, hundreds of ms on a loaded one); those that end ok then enter the run's latency metrics.
    Here every stream is killed in one callback that the event loop runs before its other pending
    events (:func:`cut_streams`), as soon as Locust's stop yields: the requests in flight end
    ``cancelled`` with the tokens they had. Should one end ok after ``stopping_ns`` all the same, it is
    recorded ``cancelled`` too (harness.locust.users): no request counted ok ends after the stop began.
    With a graceful stop (``--stop-timeout`` > 0) the streams are left to finish.
    """
    ctx = current()
    if not ctx.active or ctx.role == "master":
        return
    ctx.meta["stopping_ns"] = time.monotonic_ns()
    if not environment.stop_timeout:
        ctx.cut_ns = ctx.meta["stopping_ns"]
        cut_streams(environment.runner, ctx.schedule)


def cut_streams(runner: Any, schedule: Any = None) -> int:
    """Kill every user greenlet and open-loop stream of this process in one event-loop callback that runs
    before the loop's other pending events; the caller's own greenlet is spared. Returns how many were
    asked to end.

    ``gevent.killall(..., block=False)`` would queue the kills behind the socket events already pending
    in the loop's pass: when the stop timer fires in the same pass as readable sockets (a busy or
    descheduled process), those streams would read and stamp their tokens first. The kills are fed to
    a watcher of libev's highest priority instead, which libev invokes before the pass's other events
    (other loops: ``killall``).
    """
    me = gevent.getcurrent()
    streams = [g for g in (*(runner.user_greenlets if runner is not None else ()),
                           *(schedule.pool if schedule is not None else ())) if g is not me and not g.dead]
    if not streams:
        return 0
    hub = gevent.get_hub()
    watcher = hub.loop.timer(0)
    if not hasattr(watcher, "feed"):
        gevent.killall(streams, block=False)
        return len(streams)

    def kill_all() -> None:
        _state["cut_watcher"] = None  # (closing a watcher inside its own callback can hang the loop)
        for g in streams:
            try:
                if g:  # started and alive: it unwinds now, inside this callback
                    g.throw(gevent.GreenletExit)
                elif not g.dead:
                    g.kill(block=False)
            except BaseException:  # noqa: BLE001 - one stream's error must not spare the others
                hub.handle_error(g, *sys.exc_info())

    watcher.priority = 2  # EV_MAXPRI
    _state["cut_watcher"] = watcher  # referenced until it has run
    watcher.feed(_EV_TIMER, kill_all)
    return len(streams)


@events.test_stop.add_listener
def _on_test_stop(environment: Any, **_: Any) -> None:
    ctx = current()
    _state["test_stopped"] = True
    if not ctx.active:
        return
    shape = environment.shape_class
    if ctx.role != "worker" and shape is not None \
            and shape_cut_short(shape, getattr(environment.parsed_options, "run_time", None)):
        _state["interrupted"] = True
    if ctx.schedule is not None:
        ctx.schedule.cancel_inflight()
    if ctx.role == "worker":
        shipping.send_final(ctx)
        ctx.active = False
    elif ctx.role == "local":
        _finalize(ctx, complete=True)
    elif _state["collector"].complete():  # web UI stop: workers already sent their final batches
        _finalize(ctx, complete=True)


def shape_cut_short(shape: Any, run_time_s: float | None) -> bool:
    """True when a load shape's test stops before the shape finished: Locust catches a Ctrl-C during a
    shape run and stops the test as if the shape had ended. :class:`~harness.locust.shape.StepShape`
    closes its last step when it ends, and without steps or ``-t`` it never ends by itself; any shape
    with a run time (``-t``) has not reached it."""
    steps = getattr(shape, "steps", None)
    if steps:
        return steps[-1].get("end_ns") is None
    if run_time_s:
        return shape.get_run_time() < float(run_time_s)
    return steps is not None  # StepShape without steps or -t: only a stop ends it


def _on_quitting_first(environment: Any, **_: Any) -> None:
    """Quitting while the test still runs (Ctrl-C, SIGTERM): an interruption (see :func:`_interrupt`)."""
    ctx = current()
    if ctx.active and not ctx.finalized and ctx.run_dir is not None and not _state["test_stopped"]:
        _interrupt(environment, ctx)


@events.quitting.add_listener
def _on_quitting(environment: Any, **_: Any) -> None:
    ctx = current()
    if ctx.role == "worker":
        environment.process_exit_code = 0  # workers' outcomes are judged by the master
        return
    if ctx.active and not ctx.finalized and ctx.run_dir is not None:
        complete = not _state["interrupted"]
        if ctx.role == "master":
            timeout = float(environment.stop_timeout or 0) + 15.0
            complete = shipping.drain(environment, ctx, _state["collector"], timeout)
        _finalize(ctx, complete=complete)
    if _state["exit_code"] is not None:
        environment.process_exit_code = _state["exit_code"]


def _interrupt(environment: Any, ctx: RunContext) -> None:
    """Quitting before the test's end (Ctrl-C, SIGTERM): stop the users, then let test_stop finalize.

    Locust fires ``quitting`` while the users still run and stops them only afterwards; finalizing
    then would close run.json before the requests in flight end (their records used to be appended
    after it). A stop already under way (the run time was reached, test_stop not fired yet) is waited
    for instead of started twice. The master only marks the run: stopping it here would drop the
    workers from its list before Locust sends them ``quit``.
    """
    _state["interrupted"] = True
    runner = environment.runner
    wait_s = float(environment.stop_timeout or 0)
    logger.warning("stream-harness: run %s interrupted; stopping the users%s before finalizing", ctx.run_id,
                   f" (up to --stop-timeout {wait_s:g} s; Ctrl-C again cancels them)" if wait_s else "")
    if ctx.role == "master":  # Locust's own quitting listener tells the workers to quit (their users
        return                # stop, their final batches come in) and _on_quitting drains them
    try:
        if runner.state in (STATE_SPAWNING, STATE_RUNNING):
            runner.stop()  # fires test_stop, which finalizes (local; master once every final batch is in)
        deadline = time.monotonic() + wait_s + 5.0
        while not _state["test_stopped"] and time.monotonic() < deadline:
            gevent.sleep(0.1)
    except KeyboardInterrupt:  # a second Ctrl-C: cancel the streams in flight (their records are kept)
        logger.warning("stream-harness: second interrupt; cancelling the requests in flight")
        if ctx.schedule is not None:
            ctx.schedule.cancel_inflight()
        runner.user_greenlets.kill(block=True, timeout=5)


def _finalize(ctx: RunContext, complete: bool) -> None:
    for key in ("flusher",):
        g = _state.get(key)
        if g is not None:
            g.kill(block=False)
            _state[key] = None
    scraper = _state.get("scraper")
    if scraper is not None:
        scraper.stop()
        _state["scraper"] = None
    interrupted = bool(_state["interrupted"])
    code = finalize(ctx, complete=complete and not interrupted, interrupted=interrupted)
    _state["exit_code"] = code
    ctx.env.process_exit_code = code
