"""The local stack behind `make run`: embedded Redis and SMTP, a process supervisor, the launcher.

Nothing here is imported by the services; it only starts them as ordinary processes.
"""
