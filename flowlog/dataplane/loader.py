"""``python -m flowlog.dataplane.loader PIN_DIR RINGBUF_SIZE [CACHE_DIR]``: compile, load, pin.

The data plane runs this as a child process (see ``programs.compile_and_pin``);
a failure is one line on stderr and exit status 1.
"""

import sys
from pathlib import Path

from flowlog.dataplane.programs import PinLayout, compile_and_pin


def main() -> int:
    pin_dir, ringbuf_size, cache_dir = [*sys.argv[1:], ""][:3]
    try:
        cache = Path(cache_dir) if cache_dir else None
        compile_and_pin(PinLayout(Path(pin_dir)), int(ringbuf_size), cache)
    except Exception as error:  # bcc raises plain Exception for failed loads
        print(str(error).replace("\n", " "), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
