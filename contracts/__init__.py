"""The only code the parts share: task names, queues, message models, and the worker runtime
every service must run the same way (delivery settings, inbox, dead letters, step replies)."""
