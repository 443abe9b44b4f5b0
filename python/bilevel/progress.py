"""A run's progress, as the engine reports it, to the ``bilevel`` logger and a bar."""

import json
import logging
import sys

logger = logging.getLogger("bilevel")


class Progress:
    """The run's events (JSON from the engine) to the ``bilevel`` logger and, with
    ``verbose``, a bar per phase on stderr."""

    def __init__(self, verbose):
        self.verbose = verbose
        self.bar = None
        self.phase = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._close()
        return False

    def _close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __call__(self, text):
        event = json.loads(text)
        kind = event["event"]
        if kind == "phase_start":
            self.phase = event["name"]
            logger.info("phase %s: at most %d steps", self.phase, event["max_steps"])
            if self.verbose:
                self.bar = _bar(self.phase, event["max_steps"])
        elif kind == "check":
            check = event["check"]
            logger.debug(
                "phase %s step %d: loss %.6g, |grad| %.3g%s",
                self.phase,
                check["step"],
                check["loss"],
                check["grad_norm"],
                "" if check["val_loss"] is None else f", validation loss {check['val_loss']:.6g}",
            )
            if self.bar is not None:
                self.bar.update_to(check["step"], check["loss"])
        else:
            report = event["report"]
            loss = report["checks"][-1]["loss"] if report["checks"] else float("nan")
            logger.info(
                "phase %s: %d steps, loss %.6g, stopped by %s (%.3f s)",
                report["name"],
                report["steps"],
                loss,
                report["stop"].replace("_", " "),
                report["seconds"],
            )
            self._close()


def _bar(name, total):
    """A progress bar of ``total`` steps: tqdm's where it is installed, else a line of text
    redrawn on stderr."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _TextBar(name, total)

    class _Tqdm(tqdm):
        def update_to(self, step, loss):
            self.set_postfix(loss=f"{loss:.6g}", refresh=False)
            self.update(step - self.n)

    return _Tqdm(total=total, desc=name, unit="step", file=sys.stderr)


class _TextBar:
    def __init__(self, name, total):
        self.name, self.total = name, max(total, 1)

    def update_to(self, step, loss):
        filled = int(30 * step / self.total)
        sys.stderr.write(
            f"\r{self.name:<8} [{'#' * filled}{'.' * (30 - filled)}] {step}/{self.total} loss {loss:.6g}"
        )
        sys.stderr.flush()

    def close(self):
        sys.stderr.write("\n")
        sys.stderr.flush()
