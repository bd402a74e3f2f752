"""A logging handler that keeps records, for tests of what the package logs."""
import logging


class Records(logging.Handler):
    """Collects the records of the logger it is added to (works whatever its ``propagate``)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def messages(self, level=logging.DEBUG):
        return [r.getMessage() for r in self.records if r.levelno >= level]
