"""Serve an exported model over HTTP with onnxruntime (no torch needed).

    python serve.py --export export/demo --host 127.0.0.1 --port 8000
"""

import argparse

from genrec.serving.app import add_serve_args, serve_from_args

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python serve.py", description=__doc__.strip().splitlines()[0])
    add_serve_args(parser)
    serve_from_args(parser.parse_args())
