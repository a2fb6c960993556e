"""Signal names and numbers, without importing the signal module (and enum) on hot paths."""

# Linux's numbering, the same on x86_64 and arm64.
NUMBERS = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7,
    "FPE": 8, "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14,
    "TERM": 15, "STKFLT": 16, "CHLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21,
    "TTOU": 22, "URG": 23, "XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28,
    "IO": 29, "POLL": 29, "PWR": 30, "SYS": 31,
}  # fmt: skip
RTMIN, RTMAX = 34, 64


def parse(text: str) -> int:
    """A signal from ``KILL``, ``SIGKILL``, ``kill``, ``9`` or ``RTMIN+3``."""
    t = text.strip()
    if t.isdigit():
        num = int(t)
        if 0 < num <= RTMAX:
            return num
        from ..errors import UsageError  # only now: kill's success path loads no errors module

        raise UsageError(f"invalid signal number {t}")
    name = t.upper().removeprefix("SIG")
    if name in NUMBERS:
        return NUMBERS[name]
    for base, sign, limit in (("RTMIN", 1, RTMIN), ("RTMAX", -1, RTMAX)):
        if name == base:
            return limit
        if name.startswith(base + ("+" if sign > 0 else "-")) and name[len(base) + 1 :].isdigit():
            num = limit + sign * int(name[len(base) + 1 :])
            if RTMIN <= num <= RTMAX:
                return num
    from ..errors import UsageError

    raise UsageError(
        f"unknown signal {text!r}", hint="use a name such as TERM or KILL, or a number"
    )
