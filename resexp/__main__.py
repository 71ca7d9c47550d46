from resexp.cli import entry

entry()
