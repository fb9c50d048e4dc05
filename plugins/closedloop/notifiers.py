"""Telling people about the loop's decisions through Airflow notifiers.

* e-mail: the SMTP provider's `SmtpNotifier` (installed; the connection is `notifications.smtp_conn_id`);
* webhooks: `WebhookNotifier`, a small `BaseNotifier` posting JSON with urllib. Neither the Slack nor
  the Apprise nor the HTTP provider is installed and the project adds no dependencies, so one JSON
  shape serves both a Slack incoming webhook (it reads `text`) and a generic receiver (the whole
  message under `closedloop`).

`ClosedloopNotifier` is the callback the DAGs attach (`on_success_callback` of the deciding task,
`on_failure_callback` of every task): it builds the message in `training.notify` from the task's
result and hands it to `deliver`. A receiver that cannot be reached never fails the decision: the
decision is already recorded when the callback runs; `deliver` retries each receiver a bounded
number of times (tenacity), logs and records a failed delivery, and never raises.
"""

from __future__ import annotations

import html
import json
import logging
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any, Literal

from airflow.sdk import BaseNotifier

if TYPE_CHECKING:
    from training.config import Config, NotificationsSpec
    from training.notify import Message
    from training.paths import StatePaths

log = logging.getLogger(__name__)


class WebhookNotifier(BaseNotifier):
    """POST a JSON payload to a webhook URL (Slack-compatible: `text`; generic: the rest)."""

    template_fields = ("url",)

    def __init__(self, url: str, payload: dict[str, Any], *, timeout_s: float = 10.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.url = url
        self.payload = payload
        self.timeout_s = timeout_s

    def notify(self, context: Any) -> None:
        request = urllib.request.Request(
            self.url, data=json.dumps(self.payload, default=str).encode(), method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "closedloop-notifier"},
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 - http(s) only (config)
            if not 200 <= response.status < 300:
                raise OSError(f"webhook {self.url} answered HTTP {response.status}")


def webhook_payload(message: Message) -> dict[str, Any]:
    """Slack's incoming webhooks read `text` (mrkdwn); a generic receiver gets the message's fields."""
    return {"text": f"*{message.subject}*\n{message.body}", "closedloop": message.to_dict()}


def email_notifier(spec: NotificationsSpec, message: Message, to: list[str]) -> BaseNotifier:
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    return SmtpNotifier(
        to=to, from_email=spec.from_email, subject=message.subject, smtp_conn_id=spec.smtp_conn_id,
        html_content=f"<pre>{html.escape(message.body)}</pre>", mime_subtype="alternative",
        custom_headers={"X-Closedloop-Kind": message.kind, "X-Closedloop-Severity": message.severity,
                        "X-Closedloop-Dedupe-Key": message.dedupe_key},
    )


def deliver(paths: StatePaths, cfg: Config, message: Message | None) -> list[dict[str, Any]]:
    """Send `message` to every receiver its severity and kind route to; never raises.

    Each receiver gets it once per dedupe key (the ledger says what was sent); a failing receiver
    is retried `attempts` times, then logged and recorded as failed (the next attempt to send the
    same decision, e.g. a retried task, tries it again).
    """
    from tenacity import Retrying, stop_after_attempt, wait_fixed

    from training import notify

    if message is None:
        return []
    spec = cfg.notifications
    outcomes = []
    for route in spec.routes_for(message.kind, message.severity):
        receivers: list[tuple[str, BaseNotifier]] = []
        if route.email:
            receivers.append((f"email:{','.join(route.email)}", email_notifier(spec, message, route.email)))
        if route.webhook:
            receivers.append((f"webhook:{route.webhook}", WebhookNotifier(
                route.webhook, webhook_payload(message), timeout_s=spec.timeout_s)))
        for receiver, notifier in receivers:
            try:
                if notify.already_sent(paths, message.dedupe_key, receiver):
                    outcomes.append({"receiver": receiver, "status": "already_sent"})
                    continue
            except Exception:  # the ledger unreadable: better a duplicate than silence
                log.exception("notification ledger unreadable; sending %s anyway", message.dedupe_key)
            attempts = 0
            error: str | None = None
            try:
                for attempt in Retrying(stop=stop_after_attempt(spec.attempts), wait=wait_fixed(spec.retry_wait_s),
                                        reraise=True):
                    with attempt:
                        attempts += 1
                        notifier.notify({})
            except Exception as exc:  # any receiver fault: logged and recorded, never raised
                error = f"{type(exc).__name__}: {exc}"
                log.warning("notification %s to %s failed after %d attempt(s): %s",
                            message.dedupe_key, receiver, attempts, error)
            else:
                log.info("notification %s sent to %s", message.dedupe_key, receiver)
            try:
                notify.record_delivery(paths, message, receiver, sent=error is None, attempts=attempts, error=error)
            except Exception:
                log.exception("could not record the delivery of %s to %s", message.dedupe_key, receiver)
            outcomes.append({"receiver": receiver, "status": "failed" if error else "sent", "attempts": attempts,
                             "error": error})
    return outcomes


def run_url(cfg: Config, dag_id: str, run_id: str) -> str:
    """The Airflow UI page of one run (`notifications.airflow_base_url`, else Airflow's `[api] base_url`)."""
    base = cfg.notifications.airflow_base_url
    if not base:
        from airflow.configuration import conf

        base = conf.get("api", "base_url", fallback=None) or "http://localhost:8080"
    return f"{base.rstrip('/')}/dags/{urllib.parse.quote(dag_id)}/runs/{urllib.parse.quote(run_id, safe='')}"


def deadline_missed(context: dict[str, Any], model: str | None = None, what: str = "published") -> None:
    """The Deadline Alert callback of data_pipeline / batch_inference (`runtime.deadline_alerts`).

    Airflow calls it with `context` = {"dag_run": the run as the REST API shows it, "deadline":
    {"id", "deadline_time"}}; it tells the model's routes once per run (ledger dedupe) and never raises.
    """
    try:
        import datetime as dt

        from training import notify
        from training.config import load_config
        from training.deployment import use_model
        from training.paths import StatePaths

        use_model(model)
        cfg = load_config()
        if not cfg.notifications.routes:
            log.warning("deadline missed (%s) but no notification routes are configured", what)
            return
        run = context.get("dag_run") or {}
        deadline = context.get("deadline") or {}
        dag_id, run_id = str(run.get("dag_id")), str(run.get("dag_run_id") or run.get("run_id"))
        given = (run.get("conf") or {}).get("batch_date") or run.get("data_interval_start") or run.get("logical_date")
        day = dt.date.fromisoformat(str(given)[:10]) if given else None
        at = deadline.get("deadline_time")
        message = notify.deadline_missed(
            cfg, what=what, dag_id=dag_id, run_id=run_id, day=day, state=run.get("state"),
            deadline=at.isoformat() if hasattr(at, "isoformat") else str(at), run_url=run_url(cfg, dag_id, run_id),
        )
        deliver(StatePaths.from_env(), cfg, message)
    except Exception:  # a deadline alert must never fail anything
        log.exception("closedloop deadline alert (%s) not sent", what)


What = Literal["gate_decision", "drift_trigger", "deferral", "rollback", "shadow", "failure", "approval"]


class ClosedloopNotifier(BaseNotifier):
    """The DAGs' callback: build the message for what the task decided, deliver it, never fail.

    `what` says which decision the task makes: `gate_decision` (train_model's evaluate),
    `deferral` (train_model's decide), `drift_trigger` (drift_monitor's record_trigger), `rollback`,
    `shadow` (drift_monitor's shadow: an automatic rollback or a promotion on shadow evidence),
    `failure` (any task's `on_failure_callback`; one message per failed run), `approval` (train_model's
    `approve_promotion` has asked a person: a notifier of the Human-in-the-loop operator).
    """

    def __init__(self, model: str | None, what: What, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.what = what

    def notify(self, context: Any) -> None:
        try:
            from training.config import load_config
            from training.deployment import use_model
            from training.paths import StatePaths

            use_model(self.model)
            cfg = load_config()
            if not cfg.notifications.routes:
                return  # nothing configured: nothing to build, nothing sent
            paths = StatePaths.from_env()
            deliver(paths, cfg, self.message(cfg, paths, context))
        except Exception:  # a notification must never change the outcome of the decision it tells
            log.exception("closedloop notification (%s) not sent", self.what)

    def message(self, cfg: Config, paths: StatePaths, context: Any) -> Message | None:
        from training import notify

        ti = context["ti"]
        dag_id, run_id = ti.dag_id, context["run_id"]
        url = run_url(cfg, dag_id, run_id)
        if self.what == "gate_decision":
            return notify.gate_decision(cfg, ti.xcom_pull(task_ids=ti.task_id) or {}, run_url=url)
        if self.what == "drift_trigger":
            return notify.drift_trigger(
                cfg, ti.xcom_pull(task_ids="evaluate") or {}, run_url=url,
                triggered_run_id=ti.xcom_pull(task_ids="trigger_retrain", key="trigger_run_id"),
            )
        if self.what == "approval":  # train_model's approve_promotion has just asked
            held = ti.xcom_pull(task_ids="evaluate") or {}
            return notify.approval_requested(cfg, held, run_url=url,
                                             answer_url=f"{url}/tasks/{ti.task_id}/required_actions")
        if self.what == "rollback":
            return notify.rollback(cfg, ti.xcom_pull(task_ids=ti.task_id) or {}, run_url=url)
        if self.what == "shadow":  # drift_monitor's shadow task: an automatic rollback or promotion, if any
            return notify.shadow_decision(cfg, ti.xcom_pull(task_ids=ti.task_id) or {}, run_url=url)
        if self.what == "deferral":
            from training.monitoring import retrain_deferral

            pending = retrain_deferral.pending(paths)
            return None if pending is None else notify.deferral_waiting(cfg, pending, run_url=url)
        from closedloop.runtime import batch_date_of

        try:
            day = batch_date_of(context)
        except (KeyError, TypeError, ValueError):
            day = None
        error = context.get("exception")
        return notify.failure(
            cfg, dag_id=dag_id, run_id=run_id, task_id=ti.task_id, day=day, run_url=url,
            error=f"{type(error).__name__}: {error}" if error else "failed", quarantine_dir=str(paths.quarantine),
        )
