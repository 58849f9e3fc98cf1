"""A progress display for `Client.wait`: a tqdm bar when tqdm is installed, else plain lines.

``tqdm.auto`` draws a widget in Jupyter and a text bar in a terminal (install it with
``pip install 'nat-client[progress]'``). Without tqdm each event worth telling is one line.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, Optional, TextIO

from .types import Event, Job


def _tqdm_class() -> Optional[Any]:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


class Progress:
    """Shows a job's events as they arrive: tasks done of total, the best accuracy, the phase.

    ``use_tqdm``: True requires tqdm, False never uses it, None (default) uses it when installed.
    Lines and bars go to ``stream`` (default: standard error).
    """

    def __init__(
        self, job: Job, *, stream: Optional[TextIO] = None, use_tqdm: Optional[bool] = None
    ) -> None:
        self.job_id = job.job_id
        self.stream = stream if stream is not None else sys.stderr
        self.total = job.tasks_total
        self.done = job.tasks_succeeded + job.tasks_failed + job.tasks_cancelled
        self.best: Optional[float] = None
        tqdm = _tqdm_class() if use_tqdm is not False else None
        if use_tqdm and tqdm is None:
            raise ImportError("tqdm is not installed: pip install 'nat-client[progress]'")
        self._bar: Optional[Any] = None
        self._postfix: Dict[str, Any] = {}
        if tqdm is not None:
            self._bar = tqdm(
                total=self.total,
                initial=self.done,
                desc=f"job {self.job_id}",
                unit="task",
                file=self.stream,
            )
        else:
            self._line(f"{job.state}, {self.done}/{self.total} tasks done")

    def update(self, event: Event) -> None:
        """Shows one event."""
        handler = getattr(self, f"_on_{event.kind}", None)
        if handler is not None:
            handler(event)

    def close(self) -> None:
        """Ends the display (closes the bar)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # === one method per event kind ===

    def _on_progress(self, event: Event) -> None:
        self.total = event.payload.tasks_total
        self.done = event.payload.tasks_done
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.n = self.done
            self._postfix["running"] = event.payload.tasks_running
            self._bar.set_postfix(self._postfix, refresh=False)
            self._bar.refresh()

    def _on_task_completed(self, event: Event) -> None:
        accuracy = event.accuracy
        if self._bar is None:
            self._line(
                f"task done: architecture {event.payload.architecture_index}, "
                f"accuracy {accuracy:.4f}"
            )

    def _on_task_failed(self, event: Event) -> None:
        retry = "will retry" if event.payload.will_retry else "final"
        self._line(f"task {event.payload.task_id} failed ({retry}): {event.payload.reason}")

    def _on_new_best(self, event: Event) -> None:
        self.best = event.accuracy
        if self._bar is not None:
            self._postfix["best"] = f"{self.best:.4f}"
            self._bar.set_postfix(self._postfix)
        else:
            self._line(f"new best: accuracy {self.best:.4f}")

    def _on_phase_changed(self, event: Event) -> None:
        if self._bar is not None:
            self._bar.set_description(f"job {self.job_id} [{event.payload.phase}]")
        else:
            self._line(f"phase: {event.payload.phase}")

    def _on_policy_updated(self, event: Event) -> None:
        update = event.payload
        text = (
            f"policy v{update.version} (round {update.iteration + 1}/{update.iterations}): "
            f"mean reward {update.mean_reward:+.4f}, entropy {update.entropy:.3f}"
        )
        self._line(text)

    def _on_state_changed(self, event: Event) -> None:
        reason = f" ({event.payload.reason})" if event.payload.reason else ""
        self._line(f"{event.state}{reason}")
        if event.terminal:
            self.close()

    def _line(self, text: str) -> None:
        line = f"job {self.job_id}: {text}"
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)
