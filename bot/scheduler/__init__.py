"""The scheduler: proactive messages (habits, check-ins, follow-ups) and upkeep.

policy     `decide`: may the persona speak first to this person now?
targets    who a persona may speak first to, from the ledger
followups  follow-ups the persona decides on in conversation (structured output)
service    `Scheduler`: APScheduler 3 with the SQLAlchemy job store
proactive  habits, check-ins and follow-ups said (a part of `Scheduler`)
upkeep     retention, backups, the extra upkeep jobs (a part of `Scheduler`)
"""

from bot.scheduler.policy import Decision, PersonState, decide
from bot.scheduler.service import ProactiveSender, Scheduler, habit_trigger, job_ids

__all__ = [
    "Decision",
    "PersonState",
    "ProactiveSender",
    "Scheduler",
    "decide",
    "habit_trigger",
    "job_ids",
]
