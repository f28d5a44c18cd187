"""Put the freshly generated package (bindings/python) first on the path."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
