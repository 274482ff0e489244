class PaiConfigError(Exception):
    """A bad config value; the message names the key."""
