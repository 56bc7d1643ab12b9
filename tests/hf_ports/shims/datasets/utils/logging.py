"""``transformers.utils.logging`` stand-in."""


def set_verbosity_info():
    return None


def set_verbosity_error():
    return None


def set_verbosity_warning():
    return None


def enable_default_handler():
    return None


def enable_explicit_format():
    return None
