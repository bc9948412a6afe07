"""What the plot_*.py scripts share: error reporting, matplotlib set-up, atomic saving."""
import os
import sys


class InputError(Exception):
    pass


def prog_name(default):
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else default


def error(prog, message):
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 1


def pyplot(prog):
    """matplotlib.pyplot on the Agg backend, or None after one error line."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        error(prog, f"matplotlib is not installed for {sys.executable} (use /usr/bin/python3)")
        return None


def save(fig, path, prog, dpi):
    """Writes the figure through a temporary file and a rename, so a failed or interrupted
    run never leaves half an image where a good one was."""
    out_dir = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(out_dir):
        return error(prog, f"cannot write {path}: no such directory {out_dir}")
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp{os.getpid()}{ext}"  # keeps the extension: it picks the format
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    except (OSError, ValueError) as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        return error(prog, f"cannot write {path}: {e}")
    return 0
