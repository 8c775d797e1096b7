"""Write the file of every test pytest selects with the given arguments, once each, as absolute paths.

Run by the project's interpreter (it needs pytest), not imported by the tool:

    python tools/matrix/collect_files.py LIST tests -m root

writes one path a line to LIST and exits with pytest's status. The paths come
from the collected items themselves, so they depend neither on pytest's
rootdir nor on the format of what it prints.
"""
import sys

import pytest


class _Files:
    def __init__(self):
        self.paths = {}

    def pytest_collection_finish(self, session):
        for item in session.items:
            self.paths.setdefault(str(item.path), None)


def main(listing, args):
    files = _Files()
    status = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *args], plugins=[files])
    with open(listing, "w") as out:
        out.write("".join(f"{path}\n" for path in files.paths))
    return int(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
