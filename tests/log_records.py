"""A logging handler that keeps records, for tests of what the package logs."""
import contextlib
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


@contextlib.contextmanager
def records_of(*names: str, level: int = logging.INFO):
    """A :class:`Records` on the loggers ``names``, each set to ``level`` meanwhile (their own
    levels restored after)."""
    handler, loggers = Records(), [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger, saved in zip(loggers, levels):
            logger.removeHandler(handler)
            logger.setLevel(saved)
