"""TensorFlow's C++ start-up lines only when the user asks for them.

Importing Keras loads TensorFlow, whose libraries print their start-up notices
(oneDNN, "Could not find cuda drivers", and later "failed call to cuInit" on a
machine without a GPU, which reads like a failure) straight to the process's
stderr, before Python can set `TF_CPP_MIN_LOG_LEVEL` for them. Importing this
module first (the scripts do) imports Keras with those lines held back:

- the user's own `TF_CPP_MIN_LOG_LEVEL`, if set, wins, and nothing is held back;
- otherwise it is set to 3 for the rest of the run, and what the libraries
  print while Keras is imported is replayed to stderr without the start-up
  notices (glog lines `I....`/`W....` and absl's "All log messages before").
  Anything else, Python warnings included, still reaches the user.
"""

import os
import re
import sys
import tempfile

STARTUP = re.compile(rb"^([IW]\d{4} |WARNING: All log messages before absl::InitializeLog\(\)|"
                     rb"To enable the following instructions:)")


def import_keras():
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "keras" in sys.modules:
        __import__("keras")
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            __import__("keras")
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        held.seek(0)
        for line in held:
            if not STARTUP.match(line):
                sys.stderr.buffer.write(line)
        sys.stderr.flush()


import_keras()
