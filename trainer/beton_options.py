"""The beton writer's choices, free of torch: `tp-sweep data write`'s parser (cli/data.py) offers
them and the writer (trainer/data/write.py) checks them, so `--help` answers without torch."""

WRITE_MODES = ("smart", "raw", "jpg", "proportion")
DEFAULT_SMART_THRESHOLD = 3 * 64 * 64  # pixels: larger images are stored as JPEG in smart mode
SOURCES = ("imagefolder", "cifar", "digits", "synthetic")
