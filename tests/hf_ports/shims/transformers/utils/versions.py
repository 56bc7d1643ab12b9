"""``transformers.utils.versions`` stand-in."""


def require_version(requirement, hint=None):
    return None
