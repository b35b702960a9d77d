"""One error type for bad input. The CLI prints it as one line and exits with status 2."""


class RlaifError(Exception):
    """A problem the user can fix: says what, where (file, line, key) and how to fix it."""

    def __init__(self, what: str, where: str = "", fix: str = ""):
        self.what, self.where, self.fix = what, where, fix
        super().__init__(self.line())

    def line(self) -> str:
        parts = [f"{self.where}: {self.what}" if self.where else self.what]
        if self.fix:
            parts.append(f"fix: {self.fix}")
        return " -- ".join(parts)
