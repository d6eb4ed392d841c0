"""The password policy: one check used by every place that sets a password.

Long enough, not one of the passwords people pick most often, not the person's own email,
and not easy to guess (a repeated character, a keyboard run, a common word with digits).
The list of common passwords and the guessability estimate come from the zxcvbn package,
which ships them: nothing is fetched over the network.
"""

from __future__ import annotations

from functools import cache

MIN_LENGTH = 12
# The sign-in form accepts at most this many characters: a longer password could be set
# but never typed in.
MAX_LENGTH = 500
# zxcvbn refuses to score longer input; the first 72 characters decide how guessable it is.
_SCORED_LENGTH = 72
# zxcvbn's score 3 means "safely unguessable": about 10^8 guesses or more.
_MIN_SCORE = 3


@cache
def _common() -> frozenset[str]:
    # Imported here: the lists are large, and only setting a password needs them.
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(word.casefold() for word in FREQUENCY_LISTS["passwords"])


def problems(password: str, email: str = "") -> str | None:
    """What is wrong with `password` for the user with `email`, said so that person can
    choose another one; None when it is acceptable."""
    if len(password) < MIN_LENGTH:
        return f"Use at least {MIN_LENGTH} characters (this one has {len(password)})."
    if len(password) > MAX_LENGTH:
        return f"Use at most {MAX_LENGTH} characters."
    if not password.strip():
        return "The password cannot be only spaces."
    folded = password.casefold()
    email = email.strip().casefold()
    local_part = email.split("@", 1)[0]
    if email and folded in (email, local_part):
        return "The password cannot be your email address or the part before the @."
    if folded in _common():
        return "This is one of the most common passwords. Choose one nobody else would."

    from zxcvbn import zxcvbn

    context = [part for part in (email, local_part, "jobs portal", "portal") if part]
    if zxcvbn(password[:_SCORED_LENGTH], user_inputs=context)["score"] < _MIN_SCORE:
        return ("This password is easy to guess (repeated characters, a keyboard or number "
                "run, a common word with a few digits or your email). A few unrelated "
                "words make a strong one.")
    return None


def generate() -> str:
    """A random password that passes the policy (for the first admin)."""
    import secrets

    while True:
        candidate = secrets.token_urlsafe(15)  # 20 characters, about 120 bits
        if problems(candidate) is None:
            return candidate
