"""The worker: the Celery app, the beat schedule and the task entry points. Its main job is delivering
notifications and reminders; it also runs the outbox relay, expiries, reconciliation and HIS sync."""
