"""Prefect automations that act on the nightly's alert events out of the box (``flows/events.py`` names them).

One automation per alert event, named ``fruitlens: <event>``: a night whose model was rejected, whose
explanations drifted, whose explanations failed the randomisation (sanity) test, or whose evidence sits on a
shortcut. Each one fires on the first such event about any run folder (``fruitlens.run.*``). When it fires,
Prefect records ``prefect.automation.triggered`` and ``prefect.automation.action.executed`` events whose related
resources are the triggering event's: the nightly flow run, its flow and deployment. So the night is marked in the
UI's event feed, on the automation's page and on the flow run's events. With a notification block named
(``--notify BLOCK_TYPE/NAME``, any of Prefect's notification blocks: Slack, email, Microsoft Teams, a custom
webhook, ...), each automation also sends one message through it, naming the event, the run folder and its
figures.

The automations are not tied to one deployment, so they serve both `fruitlens serve` (which installs them) and the
`prefect.yaml` deployment (``fruitlens automations install`` once against the server). Installing is idempotent:
an automation of the same name is updated in place (duplicates removed), never added twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from uuid import UUID

from flows.events import EVIDENCE_SHORTCUT, EXPLANATIONS_DRIFTED, MODEL_REJECTED, SANITY_FAILED

NAME_PREFIX = "fruitlens: "
ALERTS = {
    MODEL_REJECTED: "the new model was worse than the current one and was not promoted",
    EXPLANATIONS_DRIFTED: "the new model's explanations moved away from the current model's",
    SANITY_FAILED: "an explanation method failed the randomisation test (it does not depend on the model)",
    EVIDENCE_SHORTCUT: "a class's evidence sits mostly on the border or the background (a shortcut)",
}
SUBJECT = "fruitlens: {{ event.event }}"
BODY = ("{{ event.event }} for the run folder {{ event.resource.get('fruitlens.run-dir') }}"
        "{% if flow_run %} (flow run {{ flow_run.name }}){% endif %}: {{ event.payload }}")


class AutomationError(Exception):
    """Automations could not be installed: a notification block that does not exist, a server that said no."""


@dataclass(frozen=True)
class Installed:
    """What :func:`install_automations` did: the automation names it created and those it updated."""

    created: tuple[str, ...]
    updated: tuple[str, ...]


def automation_name(event: str) -> str:
    return NAME_PREFIX + event.removeprefix("fruitlens.")


def build_automations(notify_block_id: UUID | None = None) -> list:
    """The automations (``prefect.events.schemas.automations.AutomationCore``), one per alert event."""
    from prefect.events.actions import DoNothing, SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    automations = []
    for event, meaning in ALERTS.items():
        action = (SendNotification(block_document_id=notify_block_id, subject=SUBJECT, body=BODY)
                  if notify_block_id else DoNothing())
        trigger = EventTrigger(expect={event}, match={"prefect.resource.id": "fruitlens.run.*"},
                               posture=Posture.Reactive, threshold=1, within=0)
        automations.append(AutomationCore(
            name=automation_name(event), description=f"{event}: {meaning} (installed by fruitlens)",
            enabled=True, trigger=trigger, actions=[action]))
    return automations


async def _block_id(client, notify: str) -> UUID:
    """The id of the block document ``BLOCK_TYPE/NAME`` (e.g. ``slack-webhook/ops``)."""
    from prefect.exceptions import ObjectNotFound

    block_type, sep, name = notify.partition("/")
    if not sep or not block_type or not name:
        raise AutomationError(f"--notify {notify!r}: expected BLOCK_TYPE/NAME, e.g. slack-webhook/ops")
    try:
        document = await client.read_block_document_by_name(name=name, block_type_slug=block_type)
    except ObjectNotFound:
        raise AutomationError(f"--notify {notify!r}: no such block on the server; create it first "
                              "(Prefect UI, Blocks, or `prefect block register`)") from None
    return document.id


async def ainstall_automations(notify: str | None = None) -> Installed:
    """Create or update (by name) the alert automations on the server ``PREFECT_API_URL`` names."""
    from prefect.client.orchestration import get_client

    created, updated = [], []
    async with get_client() as client:
        block_id = await _block_id(client, notify) if notify else None
        for automation in build_automations(block_id):
            existing = await client.read_automations_by_name(automation.name)
            if not existing:
                await client.create_automation(automation)
                created.append(automation.name)
                continue
            await client.update_automation(existing[0].id, automation)
            for duplicate in existing[1:]:
                await client.delete_automation(duplicate.id)
            updated.append(automation.name)
    return Installed(tuple(created), tuple(updated))


def install_automations(notify: str | None = None) -> Installed:
    """:func:`ainstall_automations` from synchronous code."""
    return asyncio.run(ainstall_automations(notify))
